"""The checkpoints of a training run: the latest (to continue from) and the best (by validation
mIoU), what they record of the run's progress, and resuming a run exactly."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

import torch

from model.checkpoint import (CheckpointError, load_strict, metadata, model_state,
                              read_checkpoint, weights_checkpoint)
from util.experiment import check_fits, find_checkpoint
from util.files.run_paths import RunPaths
from util.files.writer import save_checkpoint

if TYPE_CHECKING:
    from model.sccan import SCCAN
    from util.config import Config

log = logging.getLogger('sccan')

# Entries a checkpoint needs to continue a run (the weights aside).
RESUME_ENTRIES = ('iteration', 'optimizer', 'optimizer_swin', 'rng', 'progress', 'config')
# Keys whose change makes a resumed run differ from an uninterrupted one ('processes': how many).
RUN_DEFINING_KEYS = ('epochs', 'batch_size', 'base_lr', 'transformer_lr', 'train_list',
                     'manual_seed', 'processes')


@dataclasses.dataclass
class Progress:
    """Where a run stands: stored in its checkpoints ('progress') and restored on resume."""
    iteration: int = 0                  # optimisation steps done
    best_miou: Optional[float] = None   # the best validation so far ...
    best_fb_iou: Optional[float] = None
    best_piou: Optional[float] = None
    best_epoch: Optional[float] = None  # ... at this epoch label
    best_path: Optional[str] = None     # ... saved here (main process only)
    keep_epoch: int = 0                 # epochs begun since the last new best (early stop)
    val_num: int = 0                    # validations run
    skipped_steps: int = 0              # steps skipped for a non-finite loss
    pending_validation: Optional[float] = None   # the epoch label of a validation a stop cut

    @classmethod
    def of_checkpoint(cls, checkpoint: Mapping[str, Any]) -> 'Progress':
        names = {f.name for f in dataclasses.fields(cls)}
        stored = {k: v for k, v in checkpoint['progress'].items() if k in names}
        return cls(**{**stored, 'iteration': checkpoint['iteration']})


class Checkpointer:
    """Writes the run's checkpoints, on the main process: the latest (paths.latest) and the
    best, which replaces the previous best of this run folder. `checkpoint` arguments are
    functions building the checkpoint, called on the main process only."""

    def __init__(self, paths: RunPaths, is_main: bool):
        self.paths, self.is_main = paths, is_main
        self.saved_iteration = None      # the step of the last latest checkpoint (every process)

    def save_latest(self, checkpoint: Callable[[], dict], iteration: int) -> None:
        if self.is_main:
            save_checkpoint(checkpoint(), self.paths.latest)
            log.info('saved %s (iteration %d)', self.paths.latest, iteration)
        self.saved_iteration = iteration

    def save_best(self, checkpoint: Callable[[], dict], epoch_label: float, miou: float,
                  progress: Progress) -> None:
        """Write the new best and delete the previous one, if it is in this run's snapshot
        folder: a run resumed from another folder leaves that run's files alone."""
        if not self.is_main:
            return
        path = self.paths.best(epoch_label, miou)
        save_checkpoint(checkpoint(), path)
        previous = progress.best_path
        if previous and previous != path and os.path.exists(previous) and self.paths.holds(previous):
            os.remove(previous)
        progress.best_path = path
        log.info('new best mIoU %.4f: saved %s', miou, path)


def checkpoint_bytes(net: torch.nn.Module) -> int:
    """About the size of a training checkpoint of `net`: its weights, and two optimiser states
    (momentum, AdamW's moments) of the size of its trainable weights."""
    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    return weights + 2 * trainable


def latest_checkpoint(cfg: Config) -> Optional[str]:
    """The latest checkpoint of the run of `cfg`, or None when it has none yet."""
    latest = RunPaths.of(cfg).latest
    return latest if os.path.isfile(latest) else None


def resumable(cfg: Config, resume: str, paths: RunPaths) -> tuple[str, dict[str, Any]]:
    """(path, checkpoint) to resume from: `resume` is a path or a file name in the run's snapshot
    folder; checked to continue a run of this config (same architecture, shot, data set and
    fold) and to hold the training state, before anything is built or written."""
    path = find_checkpoint(resume, paths.snapshot)
    checkpoint = read_checkpoint(path)
    check_fits(cfg, checkpoint, path, resuming=True)
    check_resumable(checkpoint, path)
    return path, checkpoint


def restore(checkpoint: Mapping[str, Any], path: str, cfg: Config, world_size: int, net: torch.nn.Module,
            sgd: torch.optim.Optimizer, adamw: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None) -> Progress:
    """Load a resumable checkpoint's weights, optimiser and loss-scale states; warn when a
    RUN_DEFINING_KEYS value differs from the run's. Returns its progress."""
    restore_training(checkpoint, path, net, sgd, adamw, scaler)
    before = {**checkpoint['config'], 'processes': checkpoint.get('world_size')}
    now = {**cfg.to_dict(), 'processes': world_size}
    changed = [k for k in RUN_DEFINING_KEYS if before.get(k) != now[k]]
    if changed:
        log.warning('resuming with changed %s: the run will not match an uninterrupted one',
                    ', '.join(f'{k} ({before.get(k)} → {now[k]})' for k in changed))
    return Progress.of_checkpoint(checkpoint)


# ---- the training state in a checkpoint (model/checkpoint.py: the format) ----------------
def training_checkpoint(net: SCCAN, epoch: float, optimizer: torch.optim.Optimizer,
                        optimizer_swin: torch.optim.Optimizer, **entries: Any) -> dict[str, Any]:
    """The checkpoint of a training run: the authors' entries, the architecture of `net`, and
    `entries` (shot, config, iteration, rng, ...)."""
    return weights_checkpoint(net, epoch=epoch, optimizer=optimizer.state_dict(),
                              optimizer_swin=optimizer_swin.state_dict(), **entries)


def check_resumable(checkpoint: Any, path: str) -> None:
    """Refuse to resume from a checkpoint without the training state (e.g. the authors')."""
    missing = [k for k in RESUME_ENTRIES if k not in metadata(checkpoint)]
    if missing:
        raise CheckpointError(f'{path} cannot resume a run: it lacks {missing} (checkpoints written by '
                              'train_sccan.py can): weights alone, such as the authors\' or a shipped model, '
                              'are for test_sccan.py and predict_sccan.py')


def restore_training(checkpoint: Mapping[str, Any], path: str, net: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, optimizer_swin: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None = None) -> None:
    """Load a resumable checkpoint's weights, optimiser states and (fp16) loss scale into the
    given objects."""
    check_resumable(checkpoint, path)
    load_strict(net, model_state(checkpoint, path), path)
    try:
        optimizer.load_state_dict(checkpoint['optimizer'])
        optimizer_swin.load_state_dict(checkpoint['optimizer_swin'])
    except (ValueError, KeyError) as e:
        raise CheckpointError(f'{path}: its optimiser states do not fit this run: {e}') from e
    if checkpoint.get('scaler') and scaler is not None and scaler.is_enabled():
        scaler.load_state_dict(checkpoint['scaler'])
