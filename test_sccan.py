"""Meta-test a SCCAN checkpoint on the novel classes of one fold (the authors' test_sccan.py).

    python test_sccan.py --config config/pascal/pascal_split0_resnet50.yaml
    python test_sccan.py --config ... --weight path/to/ckpt.pth --seeds 321 123 456 --viz 20

For each seed: test_num episodes (or --episodes), scored at the original label resolution; prints
per-class IoU, mIoU, FB-IoU and pIoU, then mean ± std over the seeds, and writes them as JSON
(--out, or next to the checkpoint under a name that says what was measured:
<checkpoint>_test_<data_set>_split<k>_<K>shot_<episodes>ep_seed<s>[-<s>...].json) with the
command-line overrides used. Every report has 95 % bootstrap intervals
(util/evaluation/uncertainty.py), printed as `mIoU 61.4 ± 0.9`. --save-episodes FILE writes every
episode and its pixel counts as an episode manifest (util/evaluation/manifest.py); --episodes-from
FILE replays a manifest's episodes (its seeds, any shot up to its own; tools/compare.py compares two
runs episode by episode); --plot FILE.png draws the report. An existing report, manifest, picture or
--viz folder is replaced only with --overwrite (an input never); all are checked before the
evaluation. Works with our checkpoints and the authors'. The checkpoint is the config's `weight` (a
path, or a file name in the run's snapshot folder) unless --weight is given. Runs under torchrun too
(episodes split over processes). See docs/numbers.md.

On PATNet's cross-domain benchmarks (config/cross_domain/, docs/cross_domain.md) any checkpoint is
tested without --any-split (a model meta-trained on PASCAL meets other classes on purpose), the
episodes of seed s are PATNet's for fix_randseed(s), --episodes N takes the first N of them, and
the report's name has no fold: <checkpoint>_test_<data_set>_<K>shot_<episodes>ep_seed<s>.json.
"""
import argparse
import sys

from util import distributed
from util.cli import ArgumentParser, non_negative_int, positive_int, run_main
from util.config import load_config
from util.determinism import prepare_process
from util.evaluation.checkpoint_evaluation import EpisodeFiles, evaluate_checkpoint
from util.evaluation.uncertainty import RESAMPLES
from util.log import close_logging, setup_logging

# The command-line choices a report records.
OVERRIDES = ('weight', 'seeds', 'episodes', 'episodes_from', 'viz', 'any_shot', 'any_split',
             'opts')


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', required=True)
    p.add_argument('--weight', help='checkpoint (overrides the config key weight)')
    p.add_argument('--seeds', type=non_negative_int, nargs='+',
                   help='episode seeds (default: manual_seed, 321 in the configs)')
    p.add_argument('--episodes', type=positive_int, help='episodes per seed (default: test_num)')
    p.add_argument('--viz', type=non_negative_int, default=0, metavar='N',
                   help='save overlays of the first N episodes of the first seed in the '
                        "report's name + _viz/")
    p.add_argument('--out', help='report file (default: next to the checkpoint, named after '
                   'what it measured)')
    p.add_argument('--save-episodes', metavar='FILE',
                   help='write every episode (files, class, pixel counts as scored) as an '
                        'episode manifest (JSON Lines)')
    p.add_argument('--episodes-from', metavar='FILE',
                   help="replay a manifest's episodes (its seeds and episodes; instead of "
                        '--seeds and --episodes)')
    p.add_argument('--plot', metavar='FILE.png',
                   help="also draw the report: per-class IoU with intervals, the seeds' mIoU, "
                        "the paper's mIoU of the fold (needs matplotlib)")
    p.add_argument('--bootstrap', type=positive_int, default=RESAMPLES, metavar='R',
                   help=f'bootstrap resamples of the intervals (default {RESAMPLES})')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing report, manifest (--save-episodes), --plot and --viz '
                        'folder')
    p.add_argument('--any-shot', action='store_true',
                   help='allow a checkpoint trained with another number of shots')
    p.add_argument('--any-split', action='store_true',
                   help='allow a checkpoint trained on another data set, fold or COCO fold '
                        'scheme (cross-dataset experiments: its base classes may be scored)')
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs overriding the config')
    return p.parse_args(argv)


def main(argv=None):
    """Meta-test as the command line asks; returns the exit status (0)."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    prepare_process(cfg.seed_deterministic)     # before any CUDA work, in every process
    with distributed.process_group() as env:
        setup_logging(is_main=env.is_main)
        try:
            evaluate_checkpoint(cfg, env, args.weight, args.seeds, args.episodes, args.viz,
                                args.out, args.overwrite, args.any_shot, args.any_split,
                                overrides={k: getattr(args, k) for k in OVERRIDES},
                                files=EpisodeFiles(args.save_episodes, args.episodes_from,
                                                   args.plot),
                                resamples=args.bootstrap)
        finally:
            close_logging()
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main, *distributed.FAILURES))
