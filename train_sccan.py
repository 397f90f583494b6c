"""Meta-train SCCAN on the base classes of one fold (the authors' train_sccan.py recipe).

    python train_sccan.py --config config/pascal/pascal_split0_resnet50.yaml [--opts KEY VALUE ...]
    torchrun --nproc_per_node=4 train_sccan.py --config config/coco/coco_split0_resnet50.yaml
    python train_sccan.py --config ... --resume train_latest.pth      # continue a run exactly

Outputs under <exp_dir>/<data_set>/SCCAN/split<k>/resnet<L>/: snapshot/ holds the best checkpoint
(the authors' names: train_epoch_<e>_<mIoU>.pth, train5_... for 5 shots) and train[5]_latest.pth
(for resuming); result/ holds the log file and TensorBoard scalars; train[5].lock names the
process running there. A new run over an earlier run's checkpoints needs --resume or --overwrite.
"""
import argparse
import glob
import logging
import math
import os
import shutil
import signal
import time

import torch

from model.checkpoint import check_resumable, read_checkpoint, restore_training, training_checkpoint
from util import distributed
from util.cli import ArgumentParser, run_main
from util.config import ConfigError, load_config
from util.datasets import episode_dataset
from util.episodes import SeededEpisodes, TrainSampler, make_loader
from util.evaluate import format_result, make_predictor, run_episodes
from util.experiment import build_model, check_fits, find_checkpoint, run_paths
from util.log import close_logging, format_duration, progress, scalar_writer, setup_logging
from util.optim import apply_schedule, build_optimizers, forward_backward, optimizer_step
from util.outputs import RunLock, describe, leftover_temporaries, save_checkpoint
from util.precision import precision_for
from util.seeding import capture_rng, restore_rng, seed_all

log = logging.getLogger('sccan')


# Keys whose change makes a resumed run differ from an uninterrupted one ('processes': how many).
RUN_DEFINING_KEYS = ('epochs', 'batch_size', 'base_lr', 'transformer_lr', 'train_list',
                     'manual_seed', 'processes')


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (on_nonfinite: stop)."""


class Interrupted(Exception):
    """SIGINT/SIGTERM received; the latest checkpoint has been written."""


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: the run stops where it is, without writing a checkpoint."""


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', required=True, help='YAML config, e.g. '
                   'config/pascal/pascal_split0_resnet50.yaml')
    p.add_argument('--resume', help='checkpoint to continue from (overrides the config key): a '
                   "path, or a file name in the run's snapshot folder")
    p.add_argument('--overwrite', action='store_true',
                   help="start over in a run folder that holds an earlier run's checkpoints, "
                        'deleting them, its log and its TensorBoard scalars')
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs overriding the config (python -m util.config lists keys)')
    return p.parse_args(argv)


class StopFlag:
    """SIGINT/SIGTERM ask for a clean stop: the latest checkpoint is written after the current
    step, then the run exits. A second signal stops at once."""

    def __init__(self, latest_path):
        self.latest_path = latest_path
        self.requested = False
        self._previous = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.requested:
            raise StoppedAtOnce(f'stopped at once by a second {signal.Signals(signum).name}; '
                                f'continue from the last checkpoint with --resume {self.latest_path}')
        self.requested = True
        log.warning('%s received: writing the latest checkpoint after this step, then stopping '
                    '(send it again to stop at once)', signal.Signals(signum).name)


class Trainer:
    """One meta-training run: model, optimisers, data, progress; resumable at any step."""

    def __init__(self, cfg, env, resume=None, overwrite=False):
        self.cfg, self.env = cfg, env
        self.paths = run_paths(cfg)
        self.latest_path = os.path.join(self.paths['snapshot'],
                                        self.paths['prefix'] + '_latest.pth')
        resumed = self.check_resume(resume) if resume else None
        self.lock = None
        try:
            notes = distributed.on_main_process(
                lambda: self.claim_run_folder(resumed and resumed[0], overwrite), env)
            self.setup(resumed, notes or [])
        except BaseException:
            self.close()
            raise

    def setup(self, resumed, notes):
        cfg, env = self.cfg, self.env
        if env.is_main:
            os.makedirs(self.paths['snapshot'], exist_ok=True)
            os.makedirs(self.paths['result'], exist_ok=True)
        setup_logging(os.path.join(self.paths['result'], self.paths['prefix'] + '.log'),
                      env.is_main)
        for note in notes:
            log.warning('%s', note)
        if cfg.seed_deterministic:
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed_all(cfg.manual_seed)
        self.precision = precision_for(cfg, env.device)
        self.net = self.precision.prepare_model(build_model(cfg, cfg.backbone_weights).to(env.device))
        self.sgd, self.adamw = build_optimizers(self.net, cfg)
        self.scaler = self.precision.grad_scaler()
        self.train_data = episode_dataset(cfg, 'train')
        self.sampler = TrainSampler(len(self.train_data), cfg.manual_seed, env.rank,
                                    env.world_size)
        self.loader = make_loader(SeededEpisodes(self.train_data),
                                  self.sampler, cfg.batch_size, cfg.workers, drop_last=True,
                                  pin_memory=env.device.type == 'cuda')
        self.iters_per_epoch = len(self.loader)
        if self.iters_per_epoch == 0:
            raise ConfigError(f'{len(self.train_data)} training images are fewer than one batch '
                              f'(batch_size {cfg.batch_size} × {env.world_size} processes)')
        self.max_iter = cfg.epochs * self.iters_per_epoch
        self.val_data = episode_dataset(cfg, 'val') if cfg.evaluate else None
        # One predictor for the whole run: its feature cache (if any) serves every validation.
        self.val_predict = make_predictor(self.net, cfg, self.precision, env.device)
        self.progress = {'iteration': 0, 'best_miou': None, 'best_fb_iou': None,
                         'best_piou': None, 'best_epoch': None, 'best_path': None,
                         'keep_epoch': 0, 'val_num': 0, 'skipped_steps': 0}
        self.saved_iteration = None
        if resumed:
            self.resume(*resumed)
        self.model = distributed.wrap_ddp(self.net, env) if env.distributed else self.net
        self.writer = scalar_writer(os.path.join(self.paths['result'],
                                                 self.paths['prefix'] + '_tensorboard'),
                                    env.is_main)
        self.stop = StopFlag(self.latest_path)

    def close(self):
        """Give the run folder back (the lock)."""
        if self.lock is not None:
            self.lock.release()

    # --- the run folder ---
    def claim_run_folder(self, resume_path, overwrite):
        """On the main process, before anything is written: take the run's lock (held until
        close), refuse to start over an earlier run's checkpoints unless continuing it or
        `overwrite` (then they go, with its log and TensorBoard scalars), and remove the
        temporaries of saves that were killed. Returns notes for the log."""
        paths, notes = self.paths, []
        os.makedirs(paths['run'], exist_ok=True)
        self.lock = RunLock(paths['lock'])
        stale = self.lock.acquire()
        if stale:
            notes.append(f'took over the lock of {describe(stale)}: that process is gone')
        checkpoints = self.earlier_checkpoints()
        if checkpoints and not self.continues(resume_path):
            if not overwrite:
                names = ', '.join(os.path.basename(p) for p in checkpoints)
                raise FileExistsError(
                    f'{paths["snapshot"]} holds checkpoints of an earlier run ({names}) that a new '
                    f'run would replace: continue that run with --resume '
                    f'{os.path.basename(checkpoints[-1])}, start over with --overwrite (deletes '
                    'them, its log and TensorBoard scalars), or set another exp_dir')
            for path in checkpoints + self.earlier_records():
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                notes.append(f'--overwrite: deleted {path} of the earlier run')
        for path in leftover_temporaries(paths['snapshot'], paths['prefix'] + '_', '.pth'):
            os.remove(path)
            notes.append(f'removed {path}, left by a checkpoint save that was killed')
        return notes

    def continues(self, resume_path):
        """Whether resuming from `resume_path` continues the run of this folder."""
        return resume_path is not None and os.path.samefile(
            os.path.dirname(os.path.abspath(resume_path)), self.paths['snapshot'])

    def earlier_checkpoints(self):
        """The checkpoints this run's names would replace: best ones, then the latest."""
        best = sorted(glob.glob(os.path.join(glob.escape(self.paths['snapshot']),
                                             self.paths['prefix'] + '_epoch_*.pth')))
        return best + ([self.latest_path] if os.path.isfile(self.latest_path) else [])

    def earlier_records(self):
        """The log file and TensorBoard folder of this run's names, where they exist."""
        result, prefix = self.paths['result'], self.paths['prefix']
        return [p for p in (os.path.join(result, prefix + '.log'),
                            os.path.join(result, prefix + '_tensorboard')) if os.path.exists(p)]

    # --- checkpoints ---
    def check_resume(self, resume):
        """(path, checkpoint) to resume from, checked to continue a run of this config (same
        architecture, shot, data set and fold), before anything is built or written."""
        path = find_checkpoint(resume, self.paths['snapshot'])
        ckpt = read_checkpoint(path)
        check_fits(self.cfg, ckpt, path)
        check_resumable(ckpt, path)
        return path, ckpt

    def resume(self, path, ckpt):
        restore_training(ckpt, path, self.net, self.sgd, self.adamw, self.scaler)
        self.progress.update(ckpt['progress'])
        self.progress['iteration'] = ckpt['iteration']
        restore_rng(ckpt['rng'])
        before = {**ckpt['config'], 'processes': ckpt.get('world_size')}
        now = {**self.cfg.to_dict(), 'processes': self.env.world_size}
        changed = [k for k in RUN_DEFINING_KEYS if before.get(k) != now[k]]
        if changed:
            log.warning('resuming with changed %s: the run will not match an uninterrupted one',
                        ', '.join(f'{k} ({before.get(k)} → {now[k]})' for k in changed))
        log.info('resumed %s at iteration %d (epoch %.2f)', path, ckpt['iteration'],
                 ckpt['iteration'] / self.iters_per_epoch)

    def checkpoint(self, epoch_label):
        return training_checkpoint(self.net, epoch_label, self.sgd, self.adamw,
                                   shot=self.cfg.shot, config=self.cfg.to_dict(),
                                   iteration=self.progress['iteration'],
                                   world_size=self.env.world_size, rng=capture_rng(),
                                   scaler=self.scaler.state_dict(), progress=dict(self.progress))

    def save_latest(self, epoch_label):
        if self.env.is_main:
            save_checkpoint(self.checkpoint(epoch_label), self.latest_path)
            log.info('saved %s (iteration %d)', self.latest_path, self.progress['iteration'])
        self.saved_iteration = self.progress['iteration']

    def save_best(self, epoch_label, miou):
        if not self.env.is_main:
            return
        path = os.path.join(self.paths['snapshot'],
                            f'{self.paths["prefix"]}_epoch_{epoch_label}_{miou:.4f}.pth')
        save_checkpoint(self.checkpoint(epoch_label), path)
        previous = self.progress['best_path']
        # only this folder's: a run resumed from another folder leaves that run's files alone
        if (previous and previous != path and os.path.exists(previous)
                and os.path.samefile(os.path.dirname(previous), self.paths['snapshot'])):
            os.remove(previous)
        self.progress['best_path'] = path
        log.info('new best mIoU %.4f: saved %s', miou, path)

    # --- the run ---
    def fit(self):
        cfg = self.cfg
        self.stop.install()
        start = time.time()
        first_epoch, offset = divmod(self.progress['iteration'], self.iters_per_epoch)
        log.info('training %s: %d epochs × %d steps, %d process(es) × batch %d, on %s',
                 cfg.source, cfg.epochs, self.iters_per_epoch, self.env.world_size,
                 cfg.batch_size, self.env.device)
        try:
            for epoch in range(first_epoch, cfg.epochs):
                if self.max_iters_reached():
                    break
                if not (epoch == first_epoch and offset):
                    if self.stop_requested():
                        self.interrupt()
                    if self.progress['keep_epoch'] >= cfg.stop_interval:
                        log.info('early stop: no new best mIoU for %d epochs', cfg.stop_interval)
                        break
                    seed_all(cfg.manual_seed + epoch)
                    self.progress['keep_epoch'] += 1
                self.train_epoch(epoch, offset if epoch == first_epoch else 0)
                stopping = self.max_iters_reached()
                if cfg.evaluate:
                    self.validate(self.epoch_label() if stopping else epoch)
                elif (epoch + 1) % cfg.save_freq == 0:
                    self.save_latest(epoch)
                if stopping:
                    log.info('max_iters %d reached: stopping', cfg.max_iters)
                    break
            if self.saved_iteration != self.progress['iteration']:
                self.save_latest(self.epoch_label())
        finally:
            self.stop.uninstall()
            self.writer.close()
        self.report(time.time() - start)

    def max_iters_reached(self):
        return self.cfg.max_iters is not None and self.progress['iteration'] >= self.cfg.max_iters

    def stop_requested(self):
        """Whether any process got a stop signal (all processes agree, so they stop together)."""
        flag = torch.tensor(float(self.stop.requested), device=self.env.device)
        return distributed.all_reduce_sum(flag).item() > 0

    def epoch_label(self):
        """The authors' epoch label of the current step: epochs done − 1."""
        label = self.progress['iteration'] / self.iters_per_epoch - 1
        return int(label) if label.is_integer() else round(label, 3)

    def interrupt(self):
        if self.saved_iteration != self.progress['iteration']:
            self.save_latest(self.epoch_label())
        raise Interrupted(f'stopped at iteration {self.progress["iteration"]}; continue with '
                          f'--resume {self.latest_path}')

    def train_epoch(self, epoch, offset):
        cfg, n = self.cfg, self.iters_per_epoch
        self.sampler.set_epoch(epoch, start=offset * cfg.batch_size)
        self.model.train()
        half = round(n / 2)
        step_time, tick = None, time.time()
        bar = progress(total=n, initial=offset, desc=f'epoch {epoch + 1}/{cfg.epochs}',
                       enabled=self.env.is_main)
        with bar:
            for i, batch in enumerate(self.loader, start=offset):
                iteration = epoch * n + i + 1
                apply_schedule(self.sgd, cfg, iteration, self.max_iter, n)
                loss = self.step(batch, iteration, epoch, i)
                self.progress['iteration'] = iteration
                elapsed, tick = time.time() - tick, time.time()
                step_time = elapsed if step_time is None else 0.9 * step_time + 0.1 * elapsed
                bar.update(1)
                bar.set_postfix(loss=f'{loss:.4f}', lr=f'{self.sgd.param_groups[-1]["lr"]:.2e}')
                self.writer.add_scalar('loss_train', loss, iteration)
                self.writer.add_scalar('lr_sgd', self.sgd.param_groups[-1]['lr'], iteration)
                self.writer.add_scalar('lr_transformer', self.adamw.param_groups[0]['lr'],
                                       iteration)
                if (i + 1) % cfg.print_freq == 0:
                    log.info('epoch [%d/%d][%d/%d] loss %.4f lr %.2e remain %s', epoch + 1,
                             cfg.epochs, i + 1, n, loss, self.sgd.param_groups[-1]['lr'],
                             format_duration((self.max_iter - iteration) * step_time))
                if (cfg.evaluate and cfg.SubEpoch_val and cfg.epochs <= 100 and epoch > 0
                        and i == half and i < n - 1):
                    self.validate(epoch - 0.5)      # the authors' label for the half epoch
                    tick = time.time()
                if i < n - 1 and self.stop_requested():    # after the last step: once validated
                    self.interrupt()
                if self.max_iters_reached():
                    break

    def step(self, batch, iteration, epoch, i):
        """One optimisation step; returns the loss averaged over processes."""
        loss = forward_backward(self.model, batch, self.precision, self.scaler, self.env.device)
        loss_value = distributed.all_reduce_mean(loss.item(), self.env.device)
        if not math.isfinite(loss_value):
            where = (f'iteration {iteration} (epoch {epoch + 1}, step {i + 1}/'
                     f'{self.iters_per_epoch})')
            if self.cfg.on_nonfinite == 'stop':
                last = self.latest_path if self.saved_iteration is not None else 'none yet'
                raise NonFiniteLoss(f'non-finite training loss ({loss_value}) at {where}; '
                                    f'stopping. Last good checkpoint: {last}. (on_nonfinite: '
                                    'skip skips such steps instead.)')
            self.progress['skipped_steps'] += 1
            log.warning('non-finite loss at %s: step skipped (%d so far)', where,
                        self.progress['skipped_steps'])
            return loss_value
        optimizer_step(self.scaler, (self.sgd, self.adamw))
        return loss_value

    def validate(self, epoch_label):
        cfg, p = self.cfg, self.progress
        where = f'epoch {epoch_label} (step {p["iteration"]})'
        log.info('validation at %s: %d episodes', where, cfg.test_num)
        result = run_episodes(self.net, self.val_data, cfg,
                              cfg.manual_seed, self.env, self.precision, predict=self.val_predict)
        p['val_num'] += 1
        log.info('validation at %s:\n%s', where, format_result(result, self.val_data.classes))
        for name, key in (('mIoU_val', 'mIoU'), ('FBIoU_val', 'FB-IoU'), ('pIoU_val', 'pIoU'),
                          ('loss_val', 'loss')):
            self.writer.add_scalar(name, result[key], p['iteration'])
        if p['best_miou'] is None or result['mIoU'] > p['best_miou']:
            p.update(best_miou=result['mIoU'], best_fb_iou=result['FB-IoU'],
                     best_piou=result['pIoU'], best_epoch=epoch_label, keep_epoch=0)
            self.save_best(epoch_label, result['mIoU'])
        self.save_latest(epoch_label)

    def report(self, seconds):
        p = self.progress
        best = ('no validation' if p['best_path'] is None else
                f'best mIoU {p["best_miou"]:.4f} (FB-IoU {p["best_fb_iou"]:.4f}, pIoU '
                f'{p["best_piou"]:.4f}) at epoch {p["best_epoch"]}: {p["best_path"]}')
        skipped = p['skipped_steps']
        log.info('done in %s, %d validations; %s%s', format_duration(seconds), p['val_num'], best,
                 f'; {skipped} non-finite steps skipped' if skipped else '')


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    env = distributed.setup()
    try:
        trainer = Trainer(cfg, env, resume=args.resume or cfg.resume, overwrite=args.overwrite)
        try:
            trainer.fit()
        finally:
            trainer.close()
        return trainer
    finally:
        close_logging()
        distributed.cleanup()


# Failures with their own exit status (util.cli.run_main); other errors end with status 2.
FAILURES = ((NonFiniteLoss, 'error', 1), (Interrupted, 'interrupted', 130))

if __name__ == '__main__':
    run_main(main, *FAILURES)
