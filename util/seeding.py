"""The process's random generators: seeding them, and saving and restoring their states (so that
a resumed run continues the random streams of the interrupted one); and a network that draws
nothing at random (`without_dropout`), for deterministic training steps in tests and fixtures."""
import random
from typing import Any, Mapping, TypeVar

import numpy as np
import torch

_Module = TypeVar('_Module', bound=torch.nn.Module)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    seed_cpu(seed)
    torch.manual_seed(seed)


def seed_cpu(seed: int) -> None:
    """Seed the generators data loading draws from, leaving the CUDA ones (dropout) alone."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.default_generator.manual_seed(seed)


def capture_rng(cuda: bool = True) -> dict[str, Any]:
    """The states of the global generators: Python, NumPy, torch CPU and, with `cuda`, CUDA's
    (never from a DataLoader worker, which must not touch CUDA)."""
    state = {'python': random.getstate(), 'numpy': np.random.get_state(),
             'torch': torch.get_rng_state()}
    if cuda and torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Undo everything drawn since `capture_rng` returned `state`."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def without_dropout(net: _Module) -> _Module:
    """`net` with p = 0 on every dropout module (ours and the authors' alike), so that its
    training steps draw nothing at random (compared across processes, devices or codebases)."""
    for module in net.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    return net
