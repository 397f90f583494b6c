"""Extension points of the training loop (util.training.trainer), as detectron2's HookBase: a
hook is called after every optimisation step and at the end of every epoch, with the Trainer,
and may validate, save, log or measure through it. What the loop does besides the steps is
hooks: `AuthorsSchedule`, the default, is the authors' validation and saving schedule.

    class Every100Steps(Hook):
        def after_step(self, trainer, epoch, i):
            if trainer.progress.iteration % 100 == 0:
                ...
    train(cfg, env, hooks=[AuthorsSchedule(), Every100Steps()])

A hook that validates or saves inside a step (after_step) must leave the loop where it was: the
loop checks for stop signals and max_iters after the hooks, and a resumed run calls them again
from the step it stopped after.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from util.training.trainer import Trainer


class Hook:
    """Does nothing; subclasses override what they need."""

    def after_step(self, trainer: Trainer, epoch: int, i: int) -> None:
        """After step `i` (0-based, within `epoch`) is taken and logged."""

    def after_epoch(self, trainer: Trainer, epoch: int, stopping: bool) -> None:
        """After the last step of `epoch`; `stopping`: max_iters ends the run after it."""


class AuthorsSchedule(Hook):
    """The authors' train_sccan.py: validate (keeping the best checkpoint) at the end of every
    epoch and, for runs of at most 100 epochs, half-way through every epoch from the second one
    (labelled epoch − 0.5); without validation save the latest checkpoint every save_freq
    epochs."""

    def after_step(self, trainer: Trainer, epoch: int, i: int) -> None:
        cfg, n = trainer.cfg, trainer.iters_per_epoch
        if (cfg.evaluate and cfg.SubEpoch_val and cfg.epochs <= 100 and epoch > 0
                and i == round(n / 2) and i < n - 1):
            trainer.validate(epoch - 0.5)      # the authors' label for the half epoch
            trainer.log.paused()

    def after_epoch(self, trainer: Trainer, epoch: int, stopping: bool) -> None:
        cfg = trainer.cfg
        if cfg.evaluate:
            trainer.validate(trainer.epoch_label() if stopping else epoch)
        elif (epoch + 1) % cfg.save_freq == 0:
            trainer.save_latest(epoch)
