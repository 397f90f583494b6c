"""SCCAN checkpoints: the format, and the one place that builds, reads and checks them.

A checkpoint is a dict. The authors' train_sccan.py writes (and resumes from)
    'epoch'           their epoch label: epochs done − 1, e.g. 42, or 42.5 at a half-epoch validation
    'state_dict'      the model's weights (keys may carry DDP's 'module.' prefix)
    'optimizer'       SGD state (the modules outside the SCCA transformer)
    'optimizer_swin'  AdamW state (the SCCA transformer)
and ours add
    'architecture'    SCCAN's architecture (its constructor arguments, model.build)
    'shot'            the number of supports it was trained with
    'config'          the whole experiment config (a dict)
    'iteration', 'world_size', 'rng', 'scaler', 'progress'
                      what an exact resumption needs: steps done, processes, random generator
                      states, fp16 loss scale, best metrics and early-stop counters.
Plain state dicts (e.g. PSPNet's backbones, conv1/.../layer4/fc keys) are read too. This module
builds and reads the model's part of checkpoints (the training state's part:
util.training.checkpoints); writing one to disk is the project's one atomic writer's job
(util.files.writer.save_checkpoint), which model/ may not import. Weights that are NaN or infinite
are refused when loaded.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from model.backbone import BLOCKS_PER_STAGE

if TYPE_CHECKING:
    from model.sccan import SCCAN

DDP_PREFIX = 'module.'


class CheckpointError(ValueError):
    """A weights file that cannot be used: unreadable, not a checkpoint, or not fitting."""


# ---- reading ------------------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The object saved in `path` (on the CPU), or CheckpointError naming the file. A folder is
    refused naming the checkpoints it holds."""
    path = os.fspath(path)
    if os.path.isdir(path):
        held = sorted(f for f in os.listdir(path) if f.endswith('.pth'))
        raise IsADirectoryError(f'checkpoint {path} is a folder, not a checkpoint file; ' +
                                (f'it holds {", ".join(held)}' if held else 'it holds no .pth file'))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"(truncated or corrupted?): {e}") from e


def model_state(checkpoint: object,
                path: str | os.PathLike[str] = '<checkpoint>') -> dict[str, torch.Tensor]:
    """The model's state dict inside a checkpoint object, without a DDP 'module.' prefix."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict or a dict with a 'state_dict' entry, "
                              f"got {type(checkpoint).__name__}")
    if state and all(k.startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    return state


def metadata(checkpoint: object) -> dict[str, Any]:
    """The entries beside the weights ({} for a plain state dict)."""
    return checkpoint if isinstance(checkpoint, dict) and 'state_dict' in checkpoint else {}


def detect_layers(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Backbone depth of a state dict, from the number of layer3 blocks (6: 50, 23: 101);
    None when that number is no known depth's."""
    blocks = {int(m.group(1)) for k in state_dict
              for m in [re.search(r'(?:^|\.)layer3\.(\d+)\.', k)] if m}
    return {stages[2]: layers for layers, stages in BLOCKS_PER_STAGE.items()}.get(len(blocks))


def stored_architecture(checkpoint: object, keys: Iterable[str]) -> dict[str, Any]:
    """The architecture values (of `keys`) a checkpoint states: its 'architecture' entry, or
    for checkpoints written before that entry existed, the same keys of its 'config'. {} for
    the authors' checkpoints and plain state dicts."""
    meta = metadata(checkpoint)
    stored = meta.get('architecture') or meta.get('config') or {}
    return {k: stored[k] for k in keys if stored.get(k) is not None}


def _summarise(keys, limit=10):
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def mismatches(module: nn.Module,
               state: Mapping[str, torch.Tensor]) -> tuple[set[str], set[str], list[str]]:
    """(missing keys, unexpected keys, 'key (file shape) vs (model shape)' of the keys whose
    shapes differ) between the module's state dict and `state`: all empty when `state` fits."""
    own = module.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own.keys() & state.keys()
                   if state[k].shape != own[k].shape]
    return missing, unexpected, wrong_shape


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                built_as: str = '') -> None:
    """Load `state` into `module`, requiring the same keys and shapes and finite values;
    CheckpointError otherwise (`built_as`: how the module was made, for a key mismatch)."""
    missing, unexpected, wrong_shape = mismatches(module, state)
    if missing or unexpected or wrong_shape:
        parts = [f"{path}{built_as} does not fit {type(module).__name__}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatch (file vs model): {_summarise(wrong_shape)}")
        raise CheckpointError('\n  '.join(parts))
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(f"{path} holds NaN or infinite values in {len(nonfinite)} of its tensors "
                              f"({_summarise(nonfinite)}): a model with them predicts nothing meaningful")
    module.load_state_dict(state, strict=True)


def load_weights(net: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a plain state dict or a checkpoint (ours or the authors') into `net`, strictly.
    Returns the checkpoint object, so callers can read its other entries."""
    checkpoint = read_checkpoint(path)
    load_strict(net, model_state(checkpoint, path), path)
    return checkpoint


def load_backbone_weights(net: SCCAN, path: str | os.PathLike[str]) -> SCCAN:
    """Load ImageNet weights into the backbone of the SCCAN `net`, strictly: a PSPNet-style plain
    state dict (initmodel/resnet<L>_v2.pth: conv1/bn1/.../layer4/fc keys). The classifier `fc.*`
    and BatchNorm's `num_batches_tracked` counters (saved from nn.BatchNorm2d) are ignored.
    Returns `net`."""
    state = {k: v for k, v in model_state(read_checkpoint(path), path).items()
             if not k.startswith('fc.') and not k.endswith('num_batches_tracked')}
    architecture = net.architecture
    load_strict(net.backbone.body, state, path,
                f" (the backbone of ResNet-{architecture['layers']}, width {architecture['backbone_width']})")
    return net


# ---- checking -----------------------------------------------------------------------------------
def check_shot(checkpoint: object, shot: int, path: str | os.PathLike[str], how_to_continue: str) -> None:
    """Refuse a checkpoint of ours trained with another number of shots (the authors' do not
    say; their file names do: train5_... is 5-shot); `how_to_continue` ends the message."""
    trained = metadata(checkpoint).get('shot')
    if trained is not None and trained != shot:
        raise CheckpointError(f'{path} was trained with shot {trained} but the config has shot {shot}; '
                              f'{how_to_continue}')


# ---- writing ------------------------------------------------------------------------------------
def weights_checkpoint(net: SCCAN, **entries: Any) -> dict[str, Any]:
    """A checkpoint of `net`'s weights and architecture, with `entries` (any of those listed in
    the module docstring)."""
    return {'state_dict': net.state_dict(), 'architecture': dict(net.architecture), **entries}
