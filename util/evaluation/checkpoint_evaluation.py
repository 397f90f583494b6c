"""Meta-testing a checkpoint (what test_sccan.py runs): the authors' protocol on the novel classes
of one fold, for one or more episode seeds, reported as JSON.

    report = evaluate_checkpoint(cfg, env, checkpoint='best.pth', seeds=[321, 123])

For each seed: the episodes of the seed (cfg.test_num, or `episodes`), or those of an episode
manifest (`files.episodes_from`), scored at the original label resolution; the report holds
per-class IoU, mIoU, FB-IoU and pIoU per seed, their mean and population std over the seeds,
95 % bootstrap intervals per seed and pooled (util.evaluation.uncertainty), and what was asked. It
is written next to the checkpoint under a name saying what was measured (`report_path`), or to
`out`; `files` may add the episodes as a manifest and a picture. Outputs are claimed before the
evaluation: an existing report, manifest, picture or --viz folder is replaced only with
`overwrite`, none may be an input (the checkpoint, the config, a replayed manifest, the data
set's lists, list caches, images and labels), and a second run writing the same report is refused
while this one holds it. A report that cannot be written is printed on stdout.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import numpy as np

from util import distributed
from util.config import Config, ConfigError
from util.datasets import episode_dataset
from util.determinism import deterministic, prepare_process
from util.evaluation.evaluate import format_result, make_predictor, run_episodes
from util.evaluation.manifest import (check_fits, file_identity, make_header, read_manifest,
                                      replay_plans, scored_differently, scored_records,
                                      write_manifest)
from util.evaluation.metrics import SCORES
from util.evaluation.paper import paper_figure
from util.evaluation.report_plot import plot_report, require_matplotlib
from util.evaluation.uncertainty import RESAMPLES, RunCounts, format_intervals, uncertainty
from util.experiment import find_checkpoint, ready_model
from util.files.checks import InputFiles, check_outputs
from util.files.run_lock import RunLock
from util.files.run_paths import RunPaths
from util.files.writer import check_writable, write_json
from util.folds import has_folds
from util.precision import precision_for
from util.prediction.visualize import EPISODE_PATTERN, episode_saver

if TYPE_CHECKING:
    from model import SCCAN
    from util.datasets.cross_domain import PatnetEpisodes
    from util.datasets.pascal_coco import EpisodeDataset
    from util.episodes import Episode
    from util.evaluation.manifest import EpisodeRecord, Manifest
    from util.precision import Precision

log = logging.getLogger('sccan')


def checkpoint_to_test(cfg: Config, weight: Optional[str] = None) -> str:
    """The checkpoint to test: `weight`, else the config's `weight` (a path, or a file name in
    the run's snapshot folder)."""
    weight = weight or cfg.weight
    if not weight:
        raise ConfigError(f'no checkpoint to test: give --weight PATH or set weight in '
                          f'{cfg.source}')
    return find_checkpoint(weight, RunPaths.of(cfg).snapshot)


@dataclasses.dataclass(frozen=True)
class EpisodeFiles:
    """Files of a meta-test besides its report (test_sccan.py's options).

    Attributes:
        save_episodes: write the episodes and their pixel counts here (an episode manifest).
        episodes_from: replay this manifest's episodes (its seeds and episodes).
        plot: draw the report into this PNG (needs matplotlib).
    """
    save_episodes: Optional[str] = None
    episodes_from: Optional[str] = None
    plot: Optional[str] = None


def report_path(cfg: Config, checkpoint: str, seeds: Sequence[int], episodes: int,
                episodes_from: Optional[str] = None) -> str:
    """<checkpoint>_test_<data_set>_split<k>_<K>shot_<E>ep_seed<s>[-<s>...][_from-<manifest>]
    .json (no _split<k> for a data set without folds, e.g. the cross-domain benchmarks): two
    reports of different measurements never share a name."""
    fold = f'_split{cfg.split}' if has_folds(cfg.data_set) else ''
    replayed = (f'_from-{os.path.splitext(os.path.basename(episodes_from))[0]}'
                if episodes_from else '')
    return (f'{os.path.splitext(checkpoint)[0]}_test_{cfg.data_set}{fold}_'
            f'{cfg.shot}shot_{episodes}ep_seed{"-".join(map(str, seeds))}{replayed}.json')


def claim_outputs(report: str, viz: Optional[str], inputs: Union[InputFiles, Iterable[str]], overwrite: bool,
                  files: EpisodeFiles = EpisodeFiles()) -> RunLock:
    """Before the evaluation: claim the report for this run (a lock, <report>.lock: another run
    writing the same report is refused while this one runs), and check that the report (the
    manifest and picture of `files`, the --viz folder) can be written, replaces nothing
    unless `overwrite` and is no input; with `overwrite`, the episode pictures of an earlier
    --viz go.

    Args:
        inputs: the files the run reads (util.files.checks.InputFiles or paths).

    Returns:
        The claim (util.files.run_lock.RunLock), to release once the report is written.
    """
    written = [p for p in (report, files.save_episodes, files.plot) if p]
    for path in written:
        check_writable(path)
    claim = RunLock(report + '.lock', what=f'the report {report}')
    claim.acquire()
    try:
        check_outputs(written + ([viz] if viz else []), inputs, overwrite)
    except BaseException:
        claim.release()
        raise
    if viz:
        for picture in glob.glob(os.path.join(glob.escape(viz), EPISODE_PATTERN)):
            os.remove(picture)
    return claim


@contextlib.contextmanager
def claimed(env: distributed.DistEnv, claim: Callable[[], RunLock]) -> Iterator[None]:
    """Inside: the outputs claimed by `claim()` (claim_outputs, on the main process only),
    given back on the way out."""
    lock = distributed.on_main_process(claim, env)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def mean_std(per_seed: Sequence[Mapping[str, Any]]) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Mean and population std (ddof 0) of each metric over seeds."""
    values = {m: np.array([r[m] for r in per_seed]) for m in SCORES}
    return ({m: float(v.mean()) for m, v in values.items()},
            {m: float(v.std()) for m, v in values.items()})


def replayed_manifest(files: EpisodeFiles, seeds: Optional[Sequence[int]],
                      episodes: Optional[int]) -> Optional[Manifest]:
    """The manifest of files.episodes_from (None without), which brings its own seeds and
    episodes."""
    if not files.episodes_from:
        return None
    if seeds or episodes:
        raise ValueError('--episodes-from replays the seeds and episodes of its manifest: drop '
                         '--seeds and --episodes')
    return read_manifest(files.episodes_from)


def config_digest(cfg: Config) -> str:
    """SHA-256 of the config's values after --opts: equal digests, the same settings."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def class_names(dataset: Union[EpisodeDataset, PatnetEpisodes]) -> List[str]:
    """The names of a data set's classes (the cross-domain ones have names), else their ids."""
    return [str(name) for name in getattr(dataset, 'class_names', dataset.classes)]


def save_episodes(path: str, cfg: Config, checkpoint: str, dataset: Union[EpisodeDataset, PatnetEpisodes],
                  seeds: Sequence[int], episodes: int, records: Sequence[EpisodeRecord],
                  report_file: str) -> dict:
    """Write the scored episodes as a manifest; returns what the report keeps of it: its path
    relative to the report's folder (so that the two move together) and its digests."""
    header = make_header(cfg.data_set, cfg.split, cfg.shot, dataset.classes, seeds, episodes,
                         'test_sccan.py', checkpoint=file_identity(checkpoint),
                         config=dict(file_identity(cfg.source), values_sha256=config_digest(cfg)),
                         class_names=class_names(dataset))
    saved = write_manifest(path, header, records)
    log.info('wrote %s', path)
    return dict(saved, path=os.path.relpath(os.path.abspath(path),
                                            os.path.dirname(os.path.abspath(report_file))))


def warn_of_classes_without_episodes(seed: int, result: Mapping[str, Any], names: Sequence[str]) -> None:
    """mIoU averages every class, one without episodes as IoU 0 (the authors' formula): say so
    when it happens (e.g. --episodes 2 for 5 classes)."""
    missing = [name for name, n in zip(names, result['class_episodes']) if n == 0]
    if missing:
        log.warning("seed %d: %d of %d classes have no episode (class %s): mIoU counts them as "
                    "IoU 0, as the authors' formula does; test at least %d episodes",
                    seed, len(missing), len(names), ', '.join(missing), len(names))


def score_plans(net: SCCAN, dataset: Union[EpisodeDataset, PatnetEpisodes], cfg: Config,
                env: distributed.DistEnv, precision: Precision, plans: Mapping[int, Sequence[Episode]],
                viz_dir: Optional[str] = None,
                viz: int = 0) -> Tuple[List[Dict[str, Any]], List[RunCounts], List[EpisodeRecord]]:
    """Run each seed's plan ({seed: [Episode]}). Returns, in seed order, the per-seed results
    (util.evaluation.evaluate's metrics with seed and class ids), their per-episode counts
    (RunCounts) and the manifest lines of all episodes (util.evaluation.manifest.EpisodeRecord)."""
    predict = make_predictor(net, cfg, precision, env.device)   # one feature cache for all seeds
    per_seed, counts, records = [], [], []
    for n, (seed, plan) in enumerate(plans.items()):
        # every process draws the first `viz` episodes of the seed that it evaluates
        on_episode = episode_saver(viz_dir, viz, dataset.classes) if viz_dir and n == 0 else None
        result = run_episodes(net, dataset, cfg, seed, env, precision, plan=plan,
                              predict=predict, on_episode=on_episode, desc=f'seed {seed}')
        log.info('seed %d:\n%s', seed, format_result(result, class_names(dataset)))
        warn_of_classes_without_episodes(seed, result, class_names(dataset))
        scored = result.pop('per_episode')
        counts.append(RunCounts.of_evaluation(scored, len(dataset.classes)))
        records += scored_records(seed, plan, scored)
        per_seed.append({'seed': seed, **result, 'class_ids': [int(c) for c in dataset.classes],
                         'class_names': class_names(dataset)})
    return per_seed, counts, records


def evaluate_checkpoint(cfg: Config, env: distributed.DistEnv, weight: Optional[str] = None,
                        seeds: Optional[Sequence[int]] = None, episodes: Optional[int] = None,
                        viz: int = 0, out: Optional[str] = None, overwrite: bool = False,
                        any_shot: bool = False, any_split: bool = False,
                        overrides: Optional[dict] = None, files: EpisodeFiles = EpisodeFiles(),
                        resamples: int = RESAMPLES) -> dict:
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
        files: a manifest to write, one to replay, a picture to draw (EpisodeFiles).
        resamples: bootstrap resamples of the intervals.

    Returns:
        The report (a dict, also written as JSON by the main process): checkpoint, config,
        data_set, split, shot, layers, episodes, seeds (per seed: seed, the metrics of
        util.evaluation.evaluate with its seconds and episodes_per_second, end to end: loading
        included, and the class ids), mean, std, uncertainty (util.evaluation.uncertainty),
        overrides; with files: manifest (path relative to the report, digest), episodes_from (path,
        digest).
    """
    if files.plot:
        require_matplotlib()
    for note in cfg.notes:
        log.warning('%s', note)
    path = checkpoint_to_test(cfg, weight)
    replayed = replayed_manifest(files, seeds, episodes)
    seeds = replayed.seeds() if replayed else list(seeds or [cfg.manual_seed])
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(f'seeds {seeds}: {repeated} given more than once; a seed draws the same '
                         'episodes each time, so the mean and std over seeds would count them '
                         'twice: give distinct seeds')
    episodes = replayed.header['episodes'] if replayed else episodes or cfg.test_num
    out = out or report_path(cfg, path, seeds, episodes, files.episodes_from)
    viz_dir = os.path.splitext(out)[0] + '_viz' if viz else None
    prepare_process(cfg.seed_deterministic)                         # before CUDA work
    net = ready_model(cfg, env.device, path, any_shot, any_split)    # refuses one that does not fit
    cfg = cfg.replace(**net.architecture)     # what the checkpoint states, in the report too
    dataset = episode_dataset(cfg, 'val')
    inputs = InputFiles(p for p in (path, cfg.source, files.episodes_from) if p)
    data_files = dataset.input_files()
    with claimed(env, lambda: claim_outputs(out, viz_dir, inputs.add(data_files), overwrite,
                                            files)):
        precision = precision_for(cfg, env.device)
        if replayed:
            check_fits(replayed, cfg.data_set, cfg.split, cfg.shot, dataset.classes,
                       cfg.data_root, data_files, f'val_list {cfg.val_list}' if cfg.val_list
                       else f'data_root {cfg.data_root}')
            plans = replay_plans(replayed, cfg.shot)
        else:
            plans = {seed: dataset.plan(seed, episodes) for seed in seeds}
        log.info('testing %s: %s-shot, %d episodes × seeds %s%s, on %s', path, cfg.shot,
                 episodes, seeds, f' from {files.episodes_from}' if replayed else '', env.device)
        with deterministic(cfg.seed_deterministic):
            per_seed, counts, records = score_plans(net, dataset, cfg, env, precision, plans,
                                                    viz_dir, viz)
        intervals = uncertainty(counts, resamples)
        for result, interval in zip(per_seed, intervals['seeds']):
            log.info('seed %d: %s%s', result['seed'], format_intervals(result, interval),
                     ' (95 % bootstrap interval)' if interval.get('estimable', True) else '')
        mean, std = mean_std(per_seed)
        log.info('over %d seed(s): %s; std over seeds %s', len(seeds),
                 format_intervals(mean, intervals['pooled']),
                 '  '.join(f'{m} {100 * std[m]:.1f}' for m in SCORES))
        report = {'checkpoint': os.path.abspath(path), 'config': os.path.abspath(cfg.source),
                  'data_set': cfg.data_set, 'split': cfg.split, 'shot': cfg.shot,
                  'layers': cfg.layers, 'episodes': episodes, 'seeds': per_seed, 'mean': mean,
                  'std': std, 'uncertainty': intervals, 'overrides': dict(overrides or {})}
        if replayed:
            report['episodes_from'] = {'path': os.path.abspath(files.episodes_from),
                                       'digest': replayed.digest(),
                                       **replay_changes(replayed, records, path, cfg.shot)}
        if env.is_main:
            write_outputs(report, out, files, cfg, path, dataset, seeds, episodes, records)
        return report


def replay_changes(replayed: Manifest, records: Sequence[EpisodeRecord], checkpoint: str,
                   shot: int) -> Dict[str, int]:
    """What the report says of a replayed manifest's recorded counts: {'scored_differently': n}
    when it has counts to compare (its own shot), with a warning naming the episodes when the
    checkpoint is the one that scored them (then the data, settings or hardware changed)."""
    if not replayed.scored or shot != replayed.header['shot']:
        return {}
    changed = scored_differently(replayed, records)
    recorded = (replayed.header.get('checkpoint') or {}).get('sha256')
    if changed and recorded == file_identity(checkpoint)['sha256']:
        log.warning('%d of %d replayed episodes scored differently from the counts %s recorded '
                    'with this same checkpoint: the data (images, labels), the settings or the '
                    'hardware changed since; %s%s', len(changed), len(records), replayed.path,
                    '; '.join(changed[:5]), f'; ... {len(changed) - 5} more' if len(changed) > 5 else '')
    return {'scored_differently': len(changed)}


def write_outputs(report: dict, out: str, files: EpisodeFiles, cfg: Config, checkpoint: str,
                  dataset: Union[EpisodeDataset, PatnetEpisodes], seeds: Sequence[int], episodes: int,
                  records: Sequence[EpisodeRecord]) -> None:
    """Write the manifest (files.save_episodes), the report and its picture (files.plot). A
    manifest or report that cannot be written (e.g. a full disk) is an error naming it, with the
    report printed on stdout: the evaluation's results are not lost."""
    try:
        if files.save_episodes:
            report['manifest'] = save_episodes(files.save_episodes, cfg, checkpoint, dataset,
                                               seeds, episodes, records, out)
        write_json(out, report)
    except OSError as e:
        print(json.dumps(report, indent=1))
        raise OSError(f'{e}; the report is printed on stdout instead') from e
    log.info('wrote %s', out)
    if files.plot:
        plot_report(report, files.plot, *paper_figure(cfg))
        log.info('wrote %s', files.plot)
