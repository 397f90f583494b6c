"""The training loop: the authors' schedule of steps, with hooks after each step and epoch
(util.training.hooks; by default the authors' validations and checkpoints, AuthorsSchedule),
and stops (max_iters, early stop after stop_interval epochs without a new best, a signal, a
non-finite loss); resumable at any step with the same result as an uninterrupted run."""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Iterable, Mapping, NoReturn, Optional, Sequence

import torch

from util import distributed
from util.config import Config, ConfigError
from util.datasets import episode_dataset
from util.determinism import deterministic, prepare_process
from util.episodes import SeededEpisodes, TrainSampler, batches_of, make_loader
from util.experiment import ready_model
from util.files.run_paths import RunPaths
from util.files.writer import check_room, named_write_error
from util.log import close_logging, format_duration, setup_logging
from util.optim import apply_schedule, build_optimizers, forward_backward, optimizer_step
from util.precision import precision_for
from util.seeding import capture_rng, restore_rng, seed_all
from util.training.checkpoints import (Checkpointer, Progress, checkpoint_bytes, restore,
                                       resumable, training_checkpoint)
from util.training.hooks import AuthorsSchedule, Hook
from util.training.run_folder import claim_run_folder, new_folders, remove_new_folders
from util.training.scalars import TrainingLog
from util.training.signals import (Interrupted, StopFlag, ValidationAbandoned,
                                   how_to_continue)
from util.training.validation import Validation

log = logging.getLogger('sccan')


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (on_nonfinite: stop)."""


class Trainer:
    """One meta-training run of a config on the processes of `env`.

    Args:
        cfg: the config.
        env: util.distributed.DistEnv.
        resume: a checkpoint to continue from (a path or a file name in the run's snapshot
            folder), checked before anything is written.
        overwrite: start over in a run folder holding an earlier run's checkpoints (deleting
            them, its log and TensorBoard scalars).
        stop: the run's StopFlag (util.training.signals), when the caller installed it already
            (`train` does, for the time the run is set up too).
        hooks: what runs after each step and epoch (util.training.hooks); None: the authors'
            schedule of validations and checkpoints alone.

    `fit()` trains; `close()` gives the run folder back and closes the log. `paths` names the
    run's files, `progress` says where it stands.
    """

    def __init__(self, cfg: Config, env: distributed.DistEnv, resume: str | None = None,
                 overwrite: bool = False, stop: StopFlag | None = None, hooks: Iterable[Hook] | None = None):
        self.cfg, self.env = cfg, env
        self.hooks = [AuthorsSchedule()] if hooks is None else list(hooks)
        self.paths = RunPaths.of(cfg)
        self.stop = stop or StopFlag(self.paths.latest)
        resumed = resumable(cfg, resume, self.paths) if resume else None
        self.lock = None
        made = new_folders(self.paths) if env.is_main else []
        try:
            inputs = [p for p in (cfg.source, cfg.backbone_weights) if p]
            claimed = distributed.on_main_process(
                lambda: claim_run_folder(self.paths, resumed and resumed[0], overwrite, inputs),
                env)
            self.lock, notes = claimed or (None, [])
            self.setup(resumed, notes)
        except BaseException as e:
            owned = self.lock is not None         # the folders are this run's alone
            self.close()
            if owned:
                remove_new_folders(self.paths, made)     # a run that never began leaves none
            named = named_write_error(e, self.paths.run) if isinstance(e, OSError) else e
            if named is not e:
                raise named from e
            raise

    def setup(self, resumed: tuple[str, dict[str, Any]] | None, notes: Iterable[str]) -> None:
        cfg, env, paths = self.cfg, self.env, self.paths
        if env.is_main:
            os.makedirs(paths.snapshot, exist_ok=True)
            os.makedirs(paths.result, exist_ok=True)
        setup_logging(paths.log, env.is_main)
        for note in (*cfg.notes, *notes):
            log.warning('%s', note)
        prepare_process(cfg.seed_deterministic)     # before the model's first CUDA work
        seed_all(cfg.manual_seed)          # before building: the initial weights come from it
        self.precision = precision_for(cfg, env.device)
        # a resumed run is built as its checkpoint states: no backbone_weights needed
        self.net = (ready_model(cfg, env.device, resumed[0], contents=resumed[1]) if resumed
                    else ready_model(cfg, env.device))
        if env.is_main:
            check_room(paths.snapshot, 2 * checkpoint_bytes(self.net),
                       'the latest and the best checkpoint')
        # checkpoints keep them under the authors' keys 'optimizer' and 'optimizer_swin'
        self.sgd, self.adamw = build_optimizers(self.net, cfg)
        self.scaler = self.precision.grad_scaler()
        train_data = episode_dataset(cfg, 'train')
        self.sampler = TrainSampler(len(train_data), cfg.manual_seed, env.rank, env.world_size)
        self.loader = make_loader(SeededEpisodes(train_data), self.sampler, cfg.batch_size,
                                  cfg.workers, drop_last=True, pin_memory=env.device.type == 'cuda')
        self.iters_per_epoch = len(self.loader)
        if self.iters_per_epoch == 0:
            raise ConfigError(f'{len(train_data)} training images are fewer than one batch '
                              f'(batch_size {cfg.batch_size} × {env.world_size} processes)')
        self.max_iter = cfg.epochs * self.iters_per_epoch
        self.validation = Validation(cfg, env, self.net, self.precision) if cfg.evaluate else None
        self.progress = Progress()
        self.checkpointer = Checkpointer(paths, env.is_main)
        if resumed:
            path, checkpoint = resumed
            self.progress = restore(checkpoint, path, cfg, env.world_size, self.net, self.sgd,
                                    self.adamw, self.scaler)
            restore_rng(checkpoint['rng'])
            log.info('resumed %s at iteration %d (epoch %.2f)', path, checkpoint['iteration'],
                     checkpoint['iteration'] / self.iters_per_epoch)
        self.model = distributed.wrap_ddp(self.net, env) if env.distributed else self.net
        self.log = TrainingLog(cfg, paths.tensorboard, env.is_main, self.iters_per_epoch,
                               self.max_iter)

    def close(self) -> None:
        """Give the run folder back (the lock) and close the log."""
        if self.lock is not None:
            self.lock.release()
        close_logging()

    # --- the run ---
    def fit(self) -> None:
        cfg, progress = self.cfg, self.progress
        start = time.time()
        first_epoch, offset = divmod(progress.iteration, self.iters_per_epoch)
        log.info('training %s: %d epochs × %d steps, %d process(es) × batch %d, on %s',
                 cfg.source, cfg.epochs, self.iters_per_epoch, self.env.world_size,
                 cfg.batch_size, self.env.device)
        try:
            # within the flag's time, so that the signals ignored once a process is lost stay so
            continuing = lambda: how_to_continue(self.paths.latest)     # noqa: E731
            with self.stop.installed(), self.stop.deferred(), \
                    distributed.peers_watched(self.env, continuing), \
                    deterministic(self.cfg.seed_deterministic, self.env.device):
                self.run_epochs(first_epoch, offset)
        except BaseException:
            self.log.close(failing=True)
            raise
        self.log.close()
        self.report(time.time() - start)

    def run_epochs(self, first_epoch: int, offset: int) -> None:
        """Train from step `offset` of `first_epoch` to the end, validating and saving as the
        config says."""
        cfg, progress = self.cfg, self.progress
        if progress.pending_validation is not None:   # the run stopped during it: it comes first
            self.validate(progress.pending_validation)
        for epoch in range(first_epoch, cfg.epochs):
            if self.max_iters_reached():
                break
            if not (epoch == first_epoch and offset):     # an epoch begins
                if self.stop_requested():
                    self.interrupt()
                if progress.keep_epoch >= cfg.stop_interval:
                    log.info('early stop: no new best mIoU for %d epochs', cfg.stop_interval)
                    break
                seed_all(cfg.manual_seed + epoch)
                progress.keep_epoch += 1
            self.train_epoch(epoch, offset if epoch == first_epoch else 0)
            stopping = self.max_iters_reached()
            for hook in self.hooks:
                hook.after_epoch(self, epoch, stopping)
            if stopping:
                log.info('max_iters %d reached: stopping', cfg.max_iters)
                break
        if self.checkpointer.saved_iteration != progress.iteration:
            self.save_latest(self.epoch_label())

    def train_epoch(self, epoch: int, offset: int) -> None:
        cfg, n = self.cfg, self.iters_per_epoch
        self.sampler.set_epoch(epoch, start=offset * cfg.batch_size)
        self.model.train()
        with self.log.start_epoch(epoch, offset), batches_of(self.loader) as batches:
            for i, batch in enumerate(batches, start=offset):
                iteration = epoch * n + i + 1
                apply_schedule(self.sgd, cfg, iteration, self.max_iter, n)
                loss = self.step(batch, iteration, epoch, i)
                self.progress.iteration = iteration
                self.log.step(epoch, i, iteration, loss, self.sgd.param_groups[-1]['lr'],
                              self.adamw.param_groups[0]['lr'])
                for hook in self.hooks:
                    hook.after_step(self, epoch, i)
                if i < n - 1 and self.stop_requested():    # after the last step: once validated
                    self.interrupt()
                if self.max_iters_reached():
                    break

    def step(self, batch: Mapping[str, Any], iteration: int, epoch: int, i: int) -> float:
        """One optimisation step; returns the loss averaged over processes."""
        loss = forward_backward(self.model, batch, self.precision, self.scaler, self.env.device)
        loss_value = distributed.all_reduce_mean(loss.item(), self.env.device)
        if not math.isfinite(loss_value):
            where = (f'iteration {iteration} (epoch {epoch + 1}, step {i + 1}/'
                     f'{self.iters_per_epoch})')
            if self.cfg.on_nonfinite == 'stop':
                last = self.paths.latest if self.checkpointer.saved_iteration is not None else 'none yet'
                raise NonFiniteLoss(f'non-finite training loss ({loss_value}) at {where}; '
                                    f'stopping. Last good checkpoint: {last}. (on_nonfinite: '
                                    'skip skips such steps instead.)')
            self.progress.skipped_steps += 1
            log.warning('non-finite loss at %s: step skipped (%d so far)', where,
                        self.progress.skipped_steps)
            return loss_value
        optimizer_step(self.scaler, (self.sgd, self.adamw))
        return loss_value

    def validate(self, epoch_label: float) -> None:
        """Validate, keep the best checkpoint and save the latest; a stop signal meanwhile saves
        the latest at once, the validation pending (Interrupted)."""
        progress = self.progress
        progress.pending_validation = None
        try:
            result = self.validation(f'epoch {epoch_label} (step {progress.iteration})',
                                     self.abandon_if_stop_requested)
        except ValidationAbandoned:
            progress.pending_validation = epoch_label
            self.interrupt(during=f'the validation at epoch {epoch_label}')
        progress.val_num += 1
        self.log.validation(result, progress.iteration)
        if progress.best_miou is None or result['mIoU'] > progress.best_miou:
            progress.best_miou, progress.best_fb_iou, progress.best_piou = (
                result['mIoU'], result['FB-IoU'], result['pIoU'])
            progress.best_epoch, progress.keep_epoch = epoch_label, 0
            self.checkpointer.save_best(lambda: self.checkpoint(epoch_label), epoch_label,
                                        result['mIoU'], progress)
        self.save_latest(epoch_label)

    # --- checkpoints and stops ---
    def checkpoint(self, epoch_label: float) -> dict[str, Any]:
        """The run's checkpoint now (util.training.checkpoints.training_checkpoint)."""
        return training_checkpoint(self.net, epoch_label, self.sgd, self.adamw,
                                   shot=self.cfg.shot, config=self.cfg.to_dict(),
                                   iteration=self.progress.iteration,
                                   world_size=self.env.world_size, rng=capture_rng(),
                                   scaler=self.scaler.state_dict(),
                                   progress=vars(self.progress).copy())

    def save_latest(self, epoch_label: float) -> None:
        self.checkpointer.save_latest(lambda: self.checkpoint(epoch_label), self.progress.iteration)

    def max_iters_reached(self) -> bool:
        return self.cfg.max_iters is not None and self.progress.iteration >= self.cfg.max_iters

    def stop_requested(self) -> bool:
        """Whether any process got a stop signal (all processes agree, so they stop together)."""
        flag = torch.tensor(float(self.stop.requested), device=self.env.device)
        return distributed.all_reduce_sum(flag).item() > 0

    def abandon_if_stop_requested(self) -> None:
        """Between validation batches: ValidationAbandoned when a process got a stop signal."""
        if self.stop_requested():
            raise ValidationAbandoned

    def epoch_label(self) -> int | float:
        """The authors' epoch label of the current step: epochs done − 1."""
        label = self.progress.iteration / self.iters_per_epoch - 1
        return int(label) if label.is_integer() else round(label, 3)

    def interrupt(self, during: str | None = None) -> NoReturn:
        """Save the latest checkpoint (unless this step's is saved and nothing is pending) and
        stop: Interrupted."""
        progress = self.progress
        if (self.checkpointer.saved_iteration != progress.iteration
                or progress.pending_validation is not None):
            self.save_latest(self.epoch_label())
        where = f' during {during}' if during else ''
        raise Interrupted(f'stopped at iteration {progress.iteration}{where}; continue with '
                          f'--resume {self.paths.latest}')

    def report(self, seconds: float) -> None:
        progress = self.progress
        best = ('no validation' if progress.best_path is None else
                f'best mIoU {progress.best_miou:.4f} (FB-IoU {progress.best_fb_iou:.4f}, pIoU '
                f'{progress.best_piou:.4f}) at epoch {progress.best_epoch}: {progress.best_path}')
        skipped = progress.skipped_steps
        log.info('done in %s, %d validations; %s%s', format_duration(seconds), progress.val_num,
                 best, f'; {skipped} non-finite steps skipped' if skipped else '')


def train(cfg: Config, env: distributed.DistEnv, resume: Optional[str] = None,
          overwrite: bool = False, hooks: Optional[Sequence[Hook]] = None) -> Trainer:
    """Run a training of `cfg` on the processes of `env` to its end (Trainer's arguments), the
    run folder given back and the log closed after. Returns the Trainer (its paths, progress)."""
    paths = RunPaths.of(cfg)
    stop = StopFlag(paths.latest)
    with stop.installed(), distributed.peers_watched(env, lambda: how_to_continue(paths.latest)):
        trainer = Trainer(cfg, env, resume=resume, overwrite=overwrite, stop=stop, hooks=hooks)
        try:
            trainer.fit()
        finally:
            trainer.close()
    return trainer
