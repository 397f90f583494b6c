"""Meta-training SCCAN (the authors' train_sccan.py recipe), in parts with one job each:

    trainer.py      the loop: optimisation steps, epochs, stops; hooks after steps and epochs
    hooks.py        Hook, and the authors' schedule of validations and checkpoints
    run_folder.py   claiming the run folder (lock; an earlier run's files; killed saves)
    checkpoints.py  the latest and the best checkpoint; resuming a run exactly
    validation.py   validation during training
    signals.py      SIGINT/SIGTERM/SIGUSR1: a clean stop after the current step
    scalars.py      what a run reports as it goes: log lines, progress bar, TensorBoard

    trainer = train(cfg, env, resume='train_latest.pth')

The files of a run are named by util.files.run_paths.RunPaths.
"""
from util.distributed import FAILURES as GROUP_FAILURES
from util.training.checkpoints import latest_checkpoint
from util.training.hooks import AuthorsSchedule, Hook
from util.training.signals import Interrupted
from util.training.trainer import NonFiniteLoss, Trainer, train

# Failures with their own exit status (util.cli.run_main); other errors end with status 2.
FAILURES = ((NonFiniteLoss, 'error', 1), *GROUP_FAILURES, (Interrupted, 'interrupted', 130))

__all__ = ['train', 'Trainer', 'Hook', 'AuthorsSchedule', 'NonFiniteLoss', 'Interrupted',
           'FAILURES', 'latest_checkpoint']
