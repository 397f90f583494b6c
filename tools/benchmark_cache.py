"""Evaluation episodes per second with and without the backbone feature cache.

    python tools/benchmark_cache.py                  # synthetic benchmark, 5-shot, 1,000 episodes
    python tools/benchmark_cache.py --config config/pascal/pascal_split0_resnet50.yaml --opts val_size 473

Runs the same episodes twice through util.evaluate.run_episodes (the loop of test_sccan.py and
of training's validation): plain forward passes, then with `feature_cache_gb`. The model is
randomly initialised (speed does not depend on the weights; the comparison needs only that both
runs score the same). Prints backbone passes per episode, episodes/s, the speed-up, and the
largest change of mIoU / FB-IoU / pIoU between the runs. The synthetic data is written first if
it is missing.
"""
import argparse
import logging
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from util import distributed  # noqa: E402
from util.cli import ArgumentParser, positive_float, positive_int, run_main  # noqa: E402
from util.config import load_config, merged_opts  # noqa: E402
from util.datasets import episode_dataset  # noqa: E402
from util.evaluate import forward_predictor, make_predictor, run_episodes  # noqa: E402
from util.experiment import build_model  # noqa: E402
from util.precision import precision_for  # noqa: E402
from util.datasets.synthetic import write_benchmark  # noqa: E402

SYNTHETIC_CONFIG = os.path.join(REPO, 'config', 'synthetic', 'synthetic_split0_resnet50.yaml')


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=SYNTHETIC_CONFIG)
    p.add_argument('--shot', type=positive_int, default=5)
    p.add_argument('--episodes', type=positive_int, default=1000)
    p.add_argument('--cache-gb', type=positive_float, default=4.0)
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs overriding the config')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, merged_opts(['shot', str(args.shot), 'feature_cache_gb',
                                                str(args.cache_gb)], args.opts))
    if os.path.abspath(args.config) == SYNTHETIC_CONFIG and not os.path.isfile(cfg.val_list):
        write_benchmark(cfg.data_root)
    env = distributed.setup()
    torch.manual_seed(0)
    net = build_model(cfg).to(env.device).eval()
    precision = precision_for(cfg, env.device)
    dataset = episode_dataset(cfg, 'val')
    print(f'{cfg.source}: {args.shot}-shot, {args.episodes} episodes over {len(dataset)} query '
          f'images, val_size {cfg.val_size}, ResNet-{cfg.layers}, {env.device}, '
          f'{torch.get_num_threads()} threads')
    runs = {'plain': forward_predictor(net, precision, env.device),
            'cached': make_predictor(net, cfg, precision, env.device)}
    results = {}
    for name, predict in runs.items():
        result = run_episodes(net, dataset, cfg, cfg.manual_seed, env,
                              precision, num_episodes=args.episodes, predict=predict,
                              show_progress=False)
        cache = getattr(predict, 'cache', None)
        passes = cache.backbone_passes if cache else args.episodes * (1 + args.shot)
        rate = args.episodes / result['seconds']
        print(f'{name:<7} {passes / args.episodes:5.2f} backbone passes/episode  '
              f'{rate:6.2f} episodes/s  mIoU {result["mIoU"]:.6f}'
              + (f'  cache {cache.stats()["gb"]:.2f} GB' if cache else ''), flush=True)
        results[name] = (rate, result)
    (plain_rate, plain), (cached_rate, cached) = results['plain'], results['cached']
    # Not bit-identical: the backbone batches differ (cache misses only), so convolutions round
    # differently; the features are otherwise the same.
    change = max(abs(plain[m] - cached[m]) for m in ('mIoU', 'FB-IoU', 'pIoU'))
    print(f'speed-up {cached_rate / plain_rate:.2f}×; largest metric change {change:.1e}')


if __name__ == '__main__':
    logging.basicConfig(level=logging.WARNING)
    run_main(main)
