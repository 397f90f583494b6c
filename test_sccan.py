"""Meta-test a SCCAN checkpoint on the novel classes of one fold (the authors' test_sccan.py).

    python test_sccan.py --config config/pascal/pascal_split0_resnet50.yaml
    python test_sccan.py --config ... --weight path/to/ckpt.pth --seeds 321 123 456 --viz 20

For each seed: test_num episodes (or --episodes), scored at the original label resolution; prints
per-class IoU, mIoU, FB-IoU and pIoU, then mean ± std over the seeds, and writes them as JSON
(--out, or next to the checkpoint under a name that says what was measured:
<checkpoint>_test_<data_set>_split<k>_<K>shot_<episodes>ep_seed<s>[-<s>...].json) with the
command-line overrides used. An existing report or --viz folder is replaced only with
--overwrite; both are checked before the evaluation. Works with our checkpoints and the
authors'. The checkpoint is the config's `weight` (a path, or a file name in the run's snapshot
folder) unless --weight is given. Runs under torchrun too (episodes split over processes).

On PATNet's cross-domain benchmarks (config/cross_domain/, docs/cross_domain.md) any checkpoint is
tested without --any-split (a model meta-trained on PASCAL meets other classes on purpose), the
episodes of seed s are PATNet's for fix_randseed(s), --episodes N takes the first N of them, and
the report's name has no fold: <checkpoint>_test_<data_set>_<K>shot_<episodes>ep_seed<s>.json.
"""
import argparse
import glob
import json
import logging
import os

import numpy as np

from util import distributed
from util.cli import ArgumentParser, non_negative_int, positive_int, run_main
from util.config import ConfigError, load_config
from util.datasets import episode_dataset
from util.evaluate import format_result, make_predictor, run_episodes
from util.experiment import find_checkpoint, model_for_checkpoint, run_paths
from util.folds import has_folds
from util.log import close_logging, setup_logging
from util.outputs import check_outputs, check_writable, write_atomic
from util.precision import precision_for
from util.visualize import EPISODE_PATTERN, episode_saver

log = logging.getLogger('sccan')
METRICS = ('mIoU', 'FB-IoU', 'pIoU')


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
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing report and --viz folder')
    p.add_argument('--any-shot', action='store_true',
                   help='allow a checkpoint trained with another number of shots')
    p.add_argument('--any-split', action='store_true',
                   help='allow a checkpoint trained on another data set, fold or COCO fold '
                        'scheme (cross-dataset experiments: its base classes may be scored)')
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs overriding the config')
    return p.parse_args(argv)


def checkpoint_path(args, cfg):
    weight = args.weight or cfg.weight
    if not weight:
        raise ConfigError(f'no checkpoint to test: give --weight PATH or set weight in '
                          f'{cfg.source}')
    return find_checkpoint(weight, run_paths(cfg)['snapshot'])


OVERRIDES = ('weight', 'seeds', 'episodes', 'viz', 'any_shot', 'any_split', 'opts')


def report_path(args, cfg, checkpoint, seeds, episodes):
    """--out, or <checkpoint>_test_<data_set>_split<k>_<K>shot_<E>ep_seed<s>[-<s>...].json (no
    _split<k> for a data set without folds): two reports of different measurements never share
    a name."""
    if args.out:
        return args.out
    fold = f'_split{cfg.split}' if has_folds(cfg.data_set) else ''
    return (f'{os.path.splitext(checkpoint)[0]}_test_{cfg.data_set}{fold}_'
            f'{cfg.shot}shot_{episodes}ep_seed{"-".join(map(str, seeds))}.json')


def claim_outputs(args, report, viz, inputs):
    """Before the evaluation: the report (and the --viz folder) can be written and replaces
    nothing unless --overwrite; with it, the episode pictures of an earlier --viz go."""
    outputs = [report, viz] if viz else [report]
    check_outputs(outputs, inputs, args.overwrite)
    check_writable(report)
    if viz:
        for picture in glob.glob(os.path.join(glob.escape(viz), EPISODE_PATTERN)):
            os.remove(picture)


def mean_std(per_seed):
    """Mean and population std (ddof 0) of each metric over seeds."""
    values = {m: np.array([r[m] for r in per_seed]) for m in METRICS}
    return ({m: float(v.mean()) for m, v in values.items()},
            {m: float(v.std()) for m, v in values.items()})


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    env = distributed.setup()
    setup_logging(is_main=env.is_main)
    try:
        path = checkpoint_path(args, cfg)
        seeds = args.seeds or [cfg.manual_seed]
        episodes = args.episodes or cfg.test_num
        out = report_path(args, cfg, path, seeds, episodes)
        viz_dir = os.path.splitext(out)[0] + '_viz' if args.viz else None
        distributed.on_main_process(lambda: claim_outputs(args, out, viz_dir, [path, cfg.source]),
                                    env)
        precision = precision_for(cfg, env.device)
        net, _ = model_for_checkpoint(cfg, path, args.any_shot, args.any_split)
        net = precision.prepare_model(net.to(env.device))
        dataset = episode_dataset(cfg, 'val')
        log.info('testing %s: %s-shot, %d episodes × seeds %s, on %s', path, cfg.shot, episodes,
                 seeds, env.device)
        predict = make_predictor(net, cfg, precision, env.device)   # one feature cache for all seeds
        per_seed = []
        for n, seed in enumerate(seeds):
            # every process draws the first --viz episodes of the seed that it evaluates
            viz = episode_saver(viz_dir, args.viz, dataset.classes) if viz_dir and n == 0 else None
            result = run_episodes(net, dataset, cfg, seed, env, precision,
                                  num_episodes=episodes, predict=predict, on_episode=viz,
                                  desc=f'seed {seed}')
            # class names where the data set has them (the cross-domain benchmarks), else ids
            names = getattr(dataset, 'class_names', dataset.classes)
            log.info('seed %d:\n%s', seed, format_result(result, names))
            result.pop('per_episode')
            per_seed.append({'seed': seed, **result,
                             'class_ids': [int(c) for c in dataset.classes]})
        mean, std = mean_std(per_seed)
        log.info('over %d seed(s): %s', len(seeds), '  '.join(
            f'{m} {mean[m]:.4f} ± {std[m]:.4f}' for m in METRICS))
        report = {'checkpoint': os.path.abspath(path), 'config': os.path.abspath(cfg.source),
                  'data_set': cfg.data_set, 'split': cfg.split, 'shot': cfg.shot,
                  'layers': cfg.layers, 'episodes': episodes, 'seeds': per_seed, 'mean': mean,
                  'std': std, 'overrides': {k: getattr(args, k) for k in OVERRIDES}}
        if env.is_main:
            write_atomic(out, json.dumps(report, indent=1))
            log.info('wrote %s', out)
        return report
    finally:
        close_logging()
        distributed.cleanup()


if __name__ == '__main__':
    run_main(main)
