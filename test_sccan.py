"""Meta-test a SCCAN checkpoint on the novel classes of one fold (the authors' test_sccan.py).

    python test_sccan.py --config config/pascal/pascal_split0_resnet50.yaml
    python test_sccan.py --config ... --weight path/to/ckpt.pth --seeds 321 123 456 --viz 20

For each seed: test_num episodes (or --episodes), scored at the original label resolution; prints
per-class IoU, mIoU, FB-IoU and pIoU, then mean ± std over the seeds, and writes them as JSON
(--out, or next to the checkpoint under a name that says what was measured:
<checkpoint>_test_<data_set>_split<k>_<K>shot_<episodes>ep_seed<s>[-<s>...].json) with the
command-line overrides used. Every report has 95 % bootstrap intervals (util/uncertainty.py),
printed as `mIoU 61.4 ± 0.9`. --save-episodes FILE writes every episode and its pixel counts as
an episode manifest (util/manifest.py); --episodes-from FILE replays a manifest's episodes (its
seeds, any shot up to its own; tools/compare.py compares two runs episode by episode). An
existing report, manifest or --viz folder is replaced only with --overwrite (an input never);
all are checked before the evaluation. Works with our checkpoints and the authors'. The
checkpoint is the config's `weight` (a path, or a file name in the run's snapshot folder) unless
--weight is given. Runs under torchrun too (episodes split over processes).
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
from util.experiment import find_checkpoint, ready_model
from util.run_paths import RunPaths
from util.log import close_logging, setup_logging
from util.manifest import (check_fits, file_identity, make_header, read_manifest, replay_plans,
                           scored_records, write_manifest)
from util.outputs import check_outputs, check_writable, write_atomic
from util.paper import paper_figure
from util.precision import precision_for
from util.report_plot import plot_report, require_matplotlib
from util.uncertainty import RESAMPLES, RunCounts, format_intervals, uncertainty
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
    p.add_argument('--save-episodes', metavar='FILE',
                   help='write every episode (files, class, pixel counts as scored) as an '
                        'episode manifest (JSON Lines)')
    p.add_argument('--episodes-from', metavar='FILE',
                   help="replay a manifest's episodes (its seeds and episodes; instead of "
                        '--seeds and --episodes)')
    p.add_argument('--plot', metavar='FILE.png',
                   help='also draw the report: per-class IoU with intervals, the seeds\' mIoU, '
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


def checkpoint_path(args, cfg):
    weight = args.weight or cfg.weight
    if not weight:
        raise ConfigError(f'no checkpoint to test: give --weight PATH or set weight in '
                          f'{cfg.source}')
    return find_checkpoint(weight, RunPaths.of(cfg).snapshot)


OVERRIDES = ('weight', 'seeds', 'episodes', 'episodes_from', 'viz', 'any_shot', 'any_split',
             'opts')


def report_path(args, cfg, checkpoint, seeds, episodes):
    """--out, or <checkpoint>_test_<data_set>_split<k>_<K>shot_<E>ep_seed<s>[-<s>...]
    [_from-<manifest>].json: two reports of different measurements never share a name."""
    if args.out:
        return args.out
    replayed = (f'_from-{os.path.splitext(os.path.basename(args.episodes_from))[0]}'
                if args.episodes_from else '')
    return (f'{os.path.splitext(checkpoint)[0]}_test_{cfg.data_set}_split{cfg.split}_'
            f'{cfg.shot}shot_{episodes}ep_seed{"-".join(map(str, seeds))}{replayed}.json')


def claim_outputs(args, report, viz, inputs):
    """Before the evaluation: the report (the manifest of --save-episodes, the --viz folder)
    can be written and replaces nothing unless --overwrite, and none is an input; with
    --overwrite, the episode pictures of an earlier --viz go."""
    outputs = [p for p in (report, args.save_episodes, args.plot, viz) if p]
    check_outputs(outputs, inputs, args.overwrite)
    for path in (report, args.save_episodes, args.plot):
        if path:
            check_writable(path)
    if viz:
        for picture in glob.glob(os.path.join(glob.escape(viz), EPISODE_PATTERN)):
            os.remove(picture)


def mean_std(per_seed):
    """Mean and population std (ddof 0) of each metric over seeds."""
    values = {m: np.array([r[m] for r in per_seed]) for m in METRICS}
    return ({m: float(v.mean()) for m, v in values.items()},
            {m: float(v.std()) for m, v in values.items()})


def replayed_manifest(args):
    """The manifest of --episodes-from, which brings its own seeds and episodes."""
    if not args.episodes_from:
        return None
    if args.seeds or args.episodes:
        raise ValueError('--episodes-from replays the seeds and episodes of its manifest: drop '
                         '--seeds and --episodes')
    return read_manifest(args.episodes_from)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    env = distributed.setup()
    setup_logging(is_main=env.is_main)
    try:
        if args.plot:
            require_matplotlib()
        path = checkpoint_path(args, cfg)
        replayed = replayed_manifest(args)
        seeds = replayed.seeds() if replayed else args.seeds or [cfg.manual_seed]
        episodes = replayed.header['episodes'] if replayed else args.episodes or cfg.test_num
        out = report_path(args, cfg, path, seeds, episodes)
        viz_dir = os.path.splitext(out)[0] + '_viz' if args.viz else None
        inputs = [p for p in (path, cfg.source, args.episodes_from) if p]
        distributed.on_main_process(lambda: claim_outputs(args, out, viz_dir, inputs), env)
        precision = precision_for(cfg, env.device)
        net = ready_model(cfg, env.device, path, args.any_shot, args.any_split)
        dataset = episode_dataset(cfg, 'val')
        if replayed:
            check_fits(replayed, cfg.data_set, cfg.split, cfg.shot, dataset.classes, cfg.data_root)
            plans = replay_plans(replayed, cfg.shot)
        else:
            plans = {seed: dataset.plan(seed, episodes) for seed in seeds}
        log.info('testing %s: %s-shot, %d episodes × seeds %s%s, on %s', path, cfg.shot, episodes,
                 seeds, f' from {args.episodes_from}' if replayed else '', env.device)
        predict = make_predictor(net, cfg, precision, env.device)   # one feature cache for all seeds
        per_seed, counts, records = [], [], []
        for n, (seed, plan) in enumerate(plans.items()):
            # every process draws the first --viz episodes of the seed that it evaluates
            viz = episode_saver(viz_dir, args.viz, dataset.classes) if viz_dir and n == 0 else None
            result = run_episodes(net, dataset, cfg, seed, env, precision, plan=plan,
                                  predict=predict, on_episode=viz, desc=f'seed {seed}')
            scored = result.pop('per_episode')
            counts.append(RunCounts.of_evaluation(scored, len(dataset.classes)))
            records += scored_records(seed, plan, scored)
            log.info('seed %d:\n%s', seed, format_result(result, dataset.classes))
            per_seed.append({'seed': seed, **result,
                             'class_ids': [int(c) for c in dataset.classes]})
        intervals = uncertainty(counts, args.bootstrap)
        for result, interval in zip(per_seed, intervals['seeds']):
            log.info('seed %d: %s (95 %% bootstrap interval)', result['seed'],
                     format_intervals(result, interval))
        mean, std = mean_std(per_seed)
        log.info('over %d seed(s): %s; std over seeds %s', len(seeds),
                 format_intervals(mean, intervals['pooled']),
                 '  '.join(f'{m} {100 * std[m]:.1f}' for m in METRICS))
        report = {'checkpoint': os.path.abspath(path), 'config': os.path.abspath(cfg.source),
                  'data_set': cfg.data_set, 'split': cfg.split, 'shot': cfg.shot,
                  'layers': cfg.layers, 'episodes': episodes, 'seeds': per_seed, 'mean': mean,
                  'std': std, 'uncertainty': intervals,
                  'overrides': {k: getattr(args, k) for k in OVERRIDES}}
        if replayed:
            report['episodes_from'] = {'path': os.path.abspath(args.episodes_from),
                                       'digest': replayed.digest()}
        if env.is_main:
            if args.save_episodes:
                header = make_header(cfg.data_set, cfg.split, cfg.shot, dataset.classes, seeds,
                                     episodes, 'test_sccan.py', checkpoint=file_identity(path),
                                     config=dict(file_identity(cfg.source), opts=args.opts))
                saved = write_manifest(args.save_episodes, header, records)
                # relative to the report, so that the two move together
                report['manifest'] = dict(saved, path=os.path.relpath(
                    os.path.abspath(args.save_episodes), os.path.dirname(os.path.abspath(out))))
                log.info('wrote %s', args.save_episodes)
            write_atomic(out, json.dumps(report, indent=1))
            log.info('wrote %s', out)
            if args.plot:
                plot_report(report, args.plot, *paper_figure(cfg))
                log.info('wrote %s', args.plot)
        return report
    finally:
        close_logging()
        distributed.cleanup()


if __name__ == '__main__':
    run_main(main)
