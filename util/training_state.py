"""Checkpoints: the authors' format plus what an exact resumption needs.

A checkpoint is a dict with the authors' keys
    'epoch' (their label: epochs done − 1, e.g. 42 or 42.5), 'state_dict', 'optimizer',
    'optimizer_swin'
and ours
    'iteration' (training steps done), 'layers', 'shot', 'config' (dict), 'rng' (Python, NumPy,
    torch CPU and CUDA generator states), 'scaler' (fp16 loss scaling), 'progress' (best metrics,
    early-stop counter, counters of skipped steps).
Files are written atomically (temporary file, flush, fsync, rename), so a crash or a kill never
leaves a half-written checkpoint under the real name.
"""
import os
import random
import re
import tempfile

import numpy as np
import torch

from model.checkpoint import CheckpointError, model_state, read_checkpoint


def save_checkpoint(obj, path):
    """torch.save to `path` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                               dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)    # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_checkpoint(path):
    """Read a checkpoint dict (ours, the authors' or a plain state dict) onto the CPU; clear
    errors for missing, truncated or foreign files."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path} holds a {type(ckpt).__name__}, not a checkpoint dict')
    return ckpt


def state_dict_of(ckpt):
    """The model weights of a checkpoint dict, without a DDP 'module.' prefix."""
    return model_state(ckpt)


def detect_layers(state_dict):
    """Backbone depth of a state dict, from the number of layer3 blocks (6: 50, 23: 101)."""
    blocks = {int(m.group(1)) for k in state_dict
              for m in [re.search(r'(?:^|\.)layer3\.(\d+)\.', k)] if m}
    return {6: 50, 23: 101}.get(len(blocks))


def check_compatible(ckpt, cfg, path, any_shot=False):
    """Refuse a checkpoint made for another backbone or (for ours) another shot."""
    layers = ckpt.get('layers') or detect_layers(state_dict_of(ckpt))
    if layers is not None and layers != cfg.layers:
        raise CheckpointError(f'{path} is a ResNet-{layers} checkpoint but the config has layers '
                              f'{cfg.layers}; use the resnet{layers} config or --opts layers '
                              f'{layers}')
    shot = ckpt.get('shot')
    if not any_shot and shot is not None and shot != cfg.shot:
        raise CheckpointError(f'{path} was trained with shot {shot} but the config has shot '
                              f'{cfg.shot}; use the matching config (or --any-shot to evaluate '
                              'it with another number of shots on purpose)')


def capture_rng():
    state = {'python': random.getstate(), 'numpy': np.random.get_state(),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng(state):
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def find_resume_path(name, snapshot_dir):
    """A resume/weight value: an existing path as given, else a file in the run's snapshot
    folder (the authors' habit: `resume: epoch_10.pth`)."""
    for candidate in (name, os.path.join(snapshot_dir, name)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f'checkpoint not found: {name} (looked as given and in '
                            f'{snapshot_dir})')
