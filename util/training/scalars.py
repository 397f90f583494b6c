"""What a training run reports as it goes: per step a progress bar, TensorBoard scalars (loss,
learning rates) and every print_freq steps a log line with the time left; the time of the run's
first step, which warms up (torch.compile compiles in it); per validation its metrics as
scalars."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Mapping

from util.files.writer import named_write_error
from util.log import format_duration, progress, scalar_writer

if TYPE_CHECKING:
    from tqdm import tqdm

    from util.config import Config
    from util.log import ProgressLines

log = logging.getLogger('sccan')

VALIDATION_SCALARS = (('mIoU_val', 'mIoU'), ('FBIoU_val', 'FB-IoU'), ('pIoU_val', 'pIoU'),
                      ('loss_val', 'loss'))


class TrainingLog:
    """The reports of one run (scalars on the main process only)."""

    def __init__(self, cfg: Config, tensorboard_dir: str | None, is_main: bool, iters_per_epoch: int,
                 max_iter: int):
        self.cfg, self.is_main, self.tensorboard_dir = cfg, is_main, tensorboard_dir
        self.iters_per_epoch = iters_per_epoch
        # the step the run stops at (an early stop aside): max_iters cuts it short
        self.last_iteration = min(max_iter, cfg.max_iters or max_iter)
        self.writer = scalar_writer(tensorboard_dir, is_main)
        self.bar, self.step_time, self.tick = None, None, None
        self.warmed_up = False

    def start_epoch(self, epoch: int, offset: int) -> tqdm | ProgressLines:
        """The epoch's progress bar (a context manager), `offset` steps done already."""
        self.step_time, self.tick = None, time.time()
        self.bar = progress(total=self.iters_per_epoch, initial=offset,
                            desc=f'epoch {epoch + 1}/{self.cfg.epochs}', enabled=self.is_main,
                            lines=False)      # the print_freq lines say how far it is
        return self.bar

    def step(self, epoch: int, i: int, iteration: int, loss: float, sgd_lr: float,
             transformer_lr: float) -> None:
        """Step i of the epoch (iteration: steps done in all) ended with `loss`."""
        elapsed, self.tick = time.time() - self.tick, time.time()
        if not self.warmed_up:
            self.warmed_up = True
            log.info('first step: %.1f s%s', elapsed,
                     ' (compile: True, so it includes compiling the model)' if self.cfg.compile else '')
        # a moving average of the step time, for the time left; the first step (compiling,
        # allocating) would overstate it
        elif self.step_time is not None:
            self.step_time = 0.9 * self.step_time + 0.1 * elapsed
        else:
            self.step_time = elapsed
        self.bar.update(1)
        self.bar.set_postfix(loss=f'{loss:.4f}', lr=f'{sgd_lr:.2e}')
        self.writer.add_scalar('loss_train', loss, iteration)
        self.writer.add_scalar('lr_sgd', sgd_lr, iteration)
        self.writer.add_scalar('lr_transformer', transformer_lr, iteration)
        if (i + 1) % self.cfg.print_freq == 0:
            log.info('epoch [%d/%d][%d/%d] loss %.4f lr %.2e remain %s', epoch + 1,
                     self.cfg.epochs, i + 1, self.iters_per_epoch, loss, sgd_lr,
                     format_duration((self.last_iteration - iteration) * (self.step_time or elapsed)))

    def paused(self) -> None:
        """The time since the last step was not training (a validation): leave it out."""
        self.tick = time.time()

    def validation(self, result: Mapping[str, Any], iteration: int) -> None:
        for name, key in VALIDATION_SCALARS:
            self.writer.add_scalar(name, result[key], iteration)

    def close(self, failing: bool = False) -> None:
        """Write the last scalars out and close. Their error names the TensorBoard folder;
        `failing` (the run is stopping on another error, which it must not hide): logged
        instead."""
        try:
            self.writer.close()
        except OSError as e:
            error = named_write_error(e, self.tensorboard_dir)
            if not failing:
                raise error from e
            log.warning('%s', error)
