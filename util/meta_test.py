"""Meta-testing a checkpoint (what test_sccan.py runs): the authors' protocol on the novel classes
of one fold, for one or more episode seeds, reported as JSON.

    report = evaluate_checkpoint(cfg, env, checkpoint='best.pth', seeds=[321, 123])

For each seed: the episodes of the seed (cfg.test_num, or `episodes`), scored at the original
label resolution; the report holds per-class IoU, mIoU, FB-IoU and pIoU per seed, their mean and
population std over the seeds, and what was asked. It is written next to the checkpoint under a
name saying what was measured (`report_path`), or to `out`. Outputs are claimed before the
evaluation: an existing report or --viz folder is replaced only with `overwrite`.
"""
import glob
import logging
import os
from typing import Optional, Sequence

import numpy as np

from util import distributed
from util.config import ConfigError
from util.datasets import episode_dataset
from util.evaluate import format_result, make_predictor, run_episodes
from util.experiment import find_checkpoint, ready_model
from util.outputs import check_outputs, check_writable, write_json
from util.precision import precision_for
from util.run_paths import RunPaths
from util.visualize import EPISODE_PATTERN, episode_saver

log = logging.getLogger('sccan')
METRICS = ('mIoU', 'FB-IoU', 'pIoU')


def checkpoint_to_test(cfg, weight=None):
    """The checkpoint to test: `weight`, else the config's `weight` (a path, or a file name in
    the run's snapshot folder)."""
    weight = weight or cfg.weight
    if not weight:
        raise ConfigError(f'no checkpoint to test: give --weight PATH or set weight in '
                          f'{cfg.source}')
    return find_checkpoint(weight, RunPaths.of(cfg).snapshot)


def report_path(cfg, checkpoint, seeds, episodes):
    """<checkpoint>_test_<data_set>_split<k>_<K>shot_<E>ep_seed<s>[-<s>...].json: two reports
    of different measurements never share a name."""
    return (f'{os.path.splitext(checkpoint)[0]}_test_{cfg.data_set}_split{cfg.split}_'
            f'{cfg.shot}shot_{episodes}ep_seed{"-".join(map(str, seeds))}.json')


def claim_outputs(report, viz, inputs, overwrite):
    """Before the evaluation: the report (and the --viz folder) can be written and replace
    nothing unless `overwrite`; with it, the episode pictures of an earlier --viz go."""
    outputs = [report, viz] if viz else [report]
    check_outputs(outputs, inputs, overwrite)
    check_writable(report)
    if viz:
        for picture in glob.glob(os.path.join(glob.escape(viz), EPISODE_PATTERN)):
            os.remove(picture)


def mean_std(per_seed):
    """Mean and population std (ddof 0) of each metric over seeds."""
    values = {m: np.array([r[m] for r in per_seed]) for m in METRICS}
    return ({m: float(v.mean()) for m, v in values.items()},
            {m: float(v.std()) for m, v in values.items()})


def evaluate_checkpoint(cfg, env, weight: Optional[str] = None,
                        seeds: Optional[Sequence[int]] = None, episodes: Optional[int] = None,
                        viz: int = 0, out: Optional[str] = None, overwrite: bool = False,
                        any_shot: bool = False, any_split: bool = False,
                        overrides: Optional[dict] = None) -> dict:
    """Meta-test a checkpoint on the config's fold, sharded over the processes of `env`.

    Args:
        cfg: the config (data, architecture, protocol).
        env: util.distributed.DistEnv.
        weight: the checkpoint (default: the config's `weight`; checkpoint_to_test).
        seeds: episode seeds (default: [cfg.manual_seed]).
        episodes: episodes per seed (default: cfg.test_num).
        viz: save pictures of episodes 0..viz-1 of the first seed in <report>_viz/.
        out: the report file (default: report_path, next to the checkpoint).
        overwrite: replace an existing report and --viz folder.
        any_shot, any_split: test a checkpoint trained with another number of shots / on other
            classes (util.experiment.check_fits).
        overrides: recorded in the report as given (the command line's choices).

    Returns:
        The report (a dict, also written as JSON by the main process): checkpoint, config,
        data_set, split, shot, layers, episodes, seeds (per seed: seed, the metrics of
        util.evaluate and the class ids), mean, std, overrides.
    """
    path = checkpoint_to_test(cfg, weight)
    seeds = list(seeds or [cfg.manual_seed])
    episodes = episodes or cfg.test_num
    out = out or report_path(cfg, path, seeds, episodes)
    viz_dir = os.path.splitext(out)[0] + '_viz' if viz else None
    distributed.on_main_process(lambda: claim_outputs(out, viz_dir, [path, cfg.source], overwrite),
                                env)
    precision = precision_for(cfg, env.device)
    net = ready_model(cfg, env.device, path, any_shot, any_split)
    dataset = episode_dataset(cfg, 'val')
    log.info('testing %s: %s-shot, %d episodes × seeds %s, on %s', path, cfg.shot, episodes,
             seeds, env.device)
    predict = make_predictor(net, cfg, precision, env.device)   # one feature cache for all seeds
    per_seed = []
    for n, seed in enumerate(seeds):
        # every process draws the first `viz` episodes of the seed that it evaluates
        on_episode = episode_saver(viz_dir, viz, dataset.classes) if viz_dir and n == 0 else None
        result = run_episodes(net, dataset, cfg, seed, env, precision, num_episodes=episodes,
                              predict=predict, on_episode=on_episode, desc=f'seed {seed}')
        log.info('seed %d:\n%s', seed, format_result(result, dataset.classes))
        result.pop('per_episode')
        per_seed.append({'seed': seed, **result, 'class_ids': [int(c) for c in dataset.classes]})
    mean, std = mean_std(per_seed)
    log.info('over %d seed(s): %s', len(seeds), '  '.join(
        f'{m} {mean[m]:.4f} ± {std[m]:.4f}' for m in METRICS))
    report = {'checkpoint': os.path.abspath(path), 'config': os.path.abspath(cfg.source),
              'data_set': cfg.data_set, 'split': cfg.split, 'shot': cfg.shot,
              'layers': cfg.layers, 'episodes': episodes, 'seeds': per_seed, 'mean': mean,
              'std': std, 'overrides': dict(overrides or {})}
    if env.is_main:
        write_json(out, report)
        log.info('wrote %s', out)
    return report
