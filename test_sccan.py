"""Meta-test a SCCAN checkpoint on the novel classes of one fold (the authors' test_sccan.py).

    python test_sccan.py --config config/pascal/pascal_split0_resnet50.yaml
    python test_sccan.py --config ... --weight path/to/ckpt.pth --seeds 321 123 456 --viz 20

For each seed: test_num episodes (or --episodes), scored at the original label resolution; prints
per-class IoU, mIoU, FB-IoU and pIoU, then mean ± std over the seeds, and writes them as JSON
next to the checkpoint (<checkpoint>_test<K>shot.json). Works with our checkpoints and the
authors'. The checkpoint is the config's `weight` (a path, or a file name in the run's snapshot
folder) unless --weight is given. Runs under torchrun too (episodes split over processes).
"""
import argparse
import json
import logging
import os

import numpy as np

from util import distributed
from util.cli import run_main
from util.config import ConfigError, load_config
from util.episodes import episode_dataset
from util.evaluate import format_result, make_predictor, run_episodes
from util.experiment import find_checkpoint, model_for_checkpoint, run_paths
from util.log import close_logging, setup_logging
from util.precision import precision_for
from util.visualize import episode_saver

log = logging.getLogger('sccan')
METRICS = ('mIoU', 'FB-IoU', 'pIoU')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', required=True)
    p.add_argument('--weight', help='checkpoint (overrides the config key weight)')
    p.add_argument('--seeds', type=int, nargs='+', help='episode seeds (default: manual_seed, '
                   '321 in the configs)')
    p.add_argument('--episodes', type=int, help='episodes per seed (default: test_num)')
    p.add_argument('--viz', type=int, default=0, metavar='N',
                   help='save overlays of the first N episodes of the first seed')
    p.add_argument('--any-shot', action='store_true',
                   help='allow a checkpoint trained with another number of shots')
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs overriding the config')
    return p.parse_args(argv)


def checkpoint_path(args, cfg):
    weight = args.weight or cfg.weight
    if not weight:
        raise ConfigError(f'no checkpoint to test: give --weight PATH or set weight in '
                          f'{cfg.source}')
    return find_checkpoint(weight, run_paths(cfg)['snapshot'])


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
        precision = precision_for(cfg, env.device)
        net, _ = model_for_checkpoint(cfg, path, args.any_shot)
        net = precision.prepare_model(net.to(env.device))
        dataset = episode_dataset(cfg, 'val')
        seeds = args.seeds or [cfg.manual_seed]
        episodes = args.episodes or cfg.test_num
        stem = os.path.splitext(path)[0]
        log.info('testing %s: %s-shot, %d episodes × seeds %s, on %s', path, cfg.shot, episodes,
                 seeds, env.device)
        predict = make_predictor(net, cfg, precision, env.device)   # one feature cache for all seeds
        per_seed = []
        for n, seed in enumerate(seeds):
            viz = None
            if args.viz and n == 0 and env.is_main:
                viz = episode_saver(f'{stem}_viz{cfg.shot}shot_seed{seed}', args.viz,
                                    dataset.classes)
            result = run_episodes(net, dataset, len(dataset.classes), cfg, seed, env, precision,
                                  num_episodes=episodes, predict=predict, on_episode=viz,
                                  desc=f'seed {seed}')
            log.info('seed %d:\n%s', seed, format_result(result, dataset.classes))
            per_seed.append({'seed': seed, **result,
                             'class_ids': [int(c) for c in dataset.classes]})
        mean, std = mean_std(per_seed)
        log.info('over %d seed(s): %s', len(seeds), '  '.join(
            f'{m} {mean[m]:.4f} ± {std[m]:.4f}' for m in METRICS))
        report = {'checkpoint': os.path.abspath(path), 'config': os.path.abspath(cfg.source),
                  'data_set': cfg.data_set, 'split': cfg.split, 'shot': cfg.shot,
                  'layers': cfg.layers, 'episodes': episodes, 'seeds': per_seed, 'mean': mean,
                  'std': std}
        if env.is_main:
            out = f'{stem}_test{cfg.shot}shot.json'
            with open(out, 'w') as f:
                json.dump(report, f, indent=1)
            log.info('wrote %s', out)
        return report
    finally:
        close_logging()
        distributed.cleanup()


if __name__ == '__main__':
    run_main(main)
