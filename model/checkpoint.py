"""Reading weights: plain state dicts, the authors' checkpoints ({'state_dict': ...}, keys with
an optional 'module.' prefix from DDP) and PSPNet backbones, with errors that say what is wrong."""
import os
import pickle
import zipfile

import torch

DDP_PREFIX = 'module.'


class CheckpointError(ValueError):
    """A weights file that cannot be used: unreadable, not a checkpoint, or not fitting the model."""


def read_checkpoint(path):
    """The object saved in `path` (on the CPU), or CheckpointError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupted?): {e}") from e


def model_state(checkpoint, path='<checkpoint>'):
    """The model's state dict inside a checkpoint object, without a DDP 'module.' prefix."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict or a dict with a 'state_dict' entry, "
                              f"got {type(checkpoint).__name__}")
    if state and all(k.startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    return state


def _summarise(keys, limit=10):
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_strict(module, state, path):
    """Load `state` into `module`, requiring the same keys and shapes; CheckpointError otherwise."""
    own = module.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own.keys() & state.keys()
                   if state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        parts = [f"{path} does not fit {type(module).__name__}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatch (file vs model): {_summarise(wrong_shape)}")
        raise CheckpointError('\n  '.join(parts))
    module.load_state_dict(state, strict=True)


def load_weights(net, path):
    """Load a plain state dict or an authors'-format checkpoint into `net` (strict). Returns the
    checkpoint object, so callers can read its other entries (epoch, config, ...)."""
    checkpoint = read_checkpoint(path)
    load_strict(net, model_state(checkpoint, path), path)
    return checkpoint
