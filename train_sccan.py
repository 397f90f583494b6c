"""Meta-train SCCAN on the base classes of one fold (the authors' train_sccan.py recipe).

    python train_sccan.py --config config/pascal/pascal_split0_resnet50.yaml [--opts KEY VALUE ...]
    torchrun --nproc_per_node=4 train_sccan.py --config config/coco/coco_split0_resnet50.yaml
    python train_sccan.py --config ... --resume train_latest.pth      # continue a run exactly
    python train_sccan.py --config ... --auto-resume    # continue it if it has a checkpoint

Outputs under <exp_dir>/<data_set>/SCCAN/split<k>/resnet<L>/: snapshot/ holds the best checkpoint
(the authors' names: train_epoch_<e>_<mIoU>.pth, train5_... for 5 shots) and train[5]_latest.pth
(for resuming); result/ holds the log file and TensorBoard scalars; train[5].lock names the
process running there. A new run over an earlier run's checkpoints needs --resume or --overwrite.
SIGINT, SIGTERM or SIGUSR1 writes the latest checkpoint and stops with status 130
(docs/reliability.md; tools/train_slurm.sh for Slurm).
"""
import argparse
import sys

from util import distributed
from util.cli import ArgumentParser, run_main
from util.config import load_config
from util.determinism import prepare_process
from util.training import FAILURES, latest_checkpoint, train


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', required=True, help='YAML config, e.g. '
                   'config/pascal/pascal_split0_resnet50.yaml')
    p.add_argument('--resume', help='checkpoint to continue from (overrides the config key): a '
                   "path, or a file name in the run's snapshot folder")
    start = p.add_mutually_exclusive_group()
    start.add_argument('--auto-resume', action='store_true',
                       help="continue from the run's latest checkpoint when it has one, else "
                            'start (from --resume if given): for a job that a scheduler restarts '
                            '(tools/train_slurm.sh)')
    start.add_argument('--overwrite', action='store_true',
                       help="start over in a run folder that holds an earlier run's checkpoints, "
                            'deleting them, its log and its TensorBoard scalars')
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs overriding the config (python -m util.config lists keys)')
    return p.parse_args(argv)


def main(argv=None):
    """Train as the command line asks; returns the exit status (0)."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    prepare_process(cfg.seed_deterministic)     # before any CUDA work, in every process
    resume = args.resume or cfg.resume
    if args.auto_resume:
        resume = latest_checkpoint(cfg) or resume
    with distributed.process_group() as env:
        train(cfg, env, resume=resume, overwrite=args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main, *FAILURES))
