"""Every file name of a training run, in one place (the authors' layout).

    <exp_dir>/<data_set>/SCCAN/split<k>/resnet<L>/
        train[K].lock                       the lock of the run training there
                                            (util.files.run_lock.RunLock)
        snapshot/train[K]_latest.pth        the latest checkpoint (resuming)
        snapshot/train[K]_epoch_<e>_<mIoU>.pth   the best validation checkpoint
        result/train[K].log                 the log
        result/train[K]_tensorboard/        TensorBoard scalars

1- and 5-shot runs share the folders; their files are told apart by the prefix ('train' for
1 shot, 'train5' for 5), and so is their lock: a 1-shot and a 5-shot run may train side by side.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import TYPE_CHECKING, List, Optional, Tuple

from util.files.writer import leftover_temporaries

if TYPE_CHECKING:
    from util.config import Config

CHECKPOINT_SUFFIX = '.pth'
# A best checkpoint as the authors name theirs (some with a prefix, e.g. win8_train5_...); the
# epoch label is negative for a run validated before its first epoch ended (max_iters).
_BEST = re.compile(r'^(?:\w+_)?train(\d*)_epoch_-?[\d.]+_(\d\.\d+)\.pth$')
_LATEST = re.compile(r'^train(\d*)_latest\.pth$')


def shot_in_name(name: str) -> Optional[int]:
    """The number of shots a checkpoint's file name says (train_... 1, train5_... 5, the
    authors' with a prefix such as win8_ too); None for names of another kind."""
    m = _BEST.match(name) or _LATEST.match(name)
    return int(m.group(1) or 1) if m else None


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The files of the run of one data set, fold, backbone depth and shot.

    Attributes:
        run: <exp_dir>/<data_set>/SCCAN/split<k>/resnet<L>.
        shot: K.
    """
    run: str
    shot: int

    @classmethod
    def of(cls, cfg: Config) -> 'RunPaths':
        """The run folder a config trains in."""
        return cls(os.path.join(cfg.exp_dir, cfg.data_set, 'SCCAN', f'split{cfg.split}',
                                f'resnet{cfg.layers}'), cfg.shot)

    @property
    def prefix(self) -> str:
        return 'train' if self.shot == 1 else f'train{self.shot}'

    @property
    def snapshot(self) -> str:
        return os.path.join(self.run, 'snapshot')

    @property
    def result(self) -> str:
        return os.path.join(self.run, 'result')

    @property
    def lock(self) -> str:
        return os.path.join(self.run, self.prefix + '.lock')

    @property
    def latest(self) -> str:
        return os.path.join(self.snapshot, f'{self.prefix}_latest{CHECKPOINT_SUFFIX}')

    @property
    def log(self) -> str:
        return os.path.join(self.result, self.prefix + '.log')

    @property
    def tensorboard(self) -> str:
        return os.path.join(self.result, self.prefix + '_tensorboard')

    def best(self, epoch_label: int | float, miou: float) -> str:
        """The name of a best checkpoint: the authors' train[K]_epoch_<e>_<mIoU>.pth."""
        return os.path.join(self.snapshot,
                            f'{self.prefix}_epoch_{epoch_label}_{miou:.4f}{CHECKPOINT_SUFFIX}')

    def written_checkpoints(self) -> List[str]:
        """The checkpoints a run of these names writes that exist: best ones, then the latest."""
        best = sorted(glob.glob(os.path.join(glob.escape(self.snapshot),
                                             f'{self.prefix}_epoch_*{CHECKPOINT_SUFFIX}')))
        return best + ([self.latest] if os.path.isfile(self.latest) else [])

    def best_checkpoints(self) -> List[Tuple[float, str]]:
        """(mIoU, path) of every best checkpoint of this shot in the snapshot folder, ours or
        the authors' (whose names may carry a prefix such as win8_)."""
        tag = self.prefix[len('train'):]
        return [(float(m.group(2)), path)
                for path in glob.glob(os.path.join(glob.escape(self.snapshot), '*' + CHECKPOINT_SUFFIX))
                for m in [_BEST.match(os.path.basename(path))] if m and m.group(1) == tag]

    def records(self) -> List[str]:
        """The log file and TensorBoard folder of these names, where they exist."""
        return [p for p in (self.log, self.tensorboard) if os.path.exists(p)]

    def temporaries(self) -> List[str]:
        """Temporaries of checkpoint saves of these names that were killed."""
        return leftover_temporaries(self.snapshot, self.prefix + '_', CHECKPOINT_SUFFIX)

    def holds(self, path: str) -> bool:
        """Whether `path` is in this run's snapshot folder (e.g. the checkpoint a run resumes
        from: then it continues this run)."""
        return os.path.isdir(self.snapshot) and os.path.samefile(
            os.path.dirname(os.path.abspath(path)), self.snapshot)
