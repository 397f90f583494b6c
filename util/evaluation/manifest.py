"""Episode manifests: the episodes of a test, written down so that they can be replayed, moved to
another machine, scored by another model or compared episode by episode.

A manifest is JSON Lines. Line 1, the header:
    {"format": "sccan-episodes/1", "data_set": "pascal", "split": 0, "shot": 1,
     "classes": [1, 2, 3, 4, 5], "seeds": [321], "episodes": 1000,
     "source": "...", "checkpoint": {...} or null, "config": {...} or null}
then one line per episode, in order (seed by seed, episode number e = 0, 1, ...):
    {"seed": 321, "index": 0, "query": [image, label], "supports": [[image, label], ...],
     "class": 3, "intersection": [bg, fg], "union": [bg, fg]}
Paths are relative to the data root; supports are in the order they are stacked; "class" is the
data set's own class id; intersection and union are the pixel counts as scored (absent from a
manifest of episodes not scored yet, e.g. tools/dev/authors_episodes.py's). The header may name the
classes ("class_names", in the order of "classes") where the data set has names.

A manifest is read whole and checked: the header's keys, then every line (its fields, its seed
among the header's, episodes numbered 0, 1, ... seed by seed, each index once, counts that a
scoring can give), then that every seed has the header's number of episodes. The first problem
is an error naming the line.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from util.episodes import Episode
from util.evaluation.uncertainty import RunCounts
from util.files.inputs import read_text
from util.files.writer import write_atomic

if TYPE_CHECKING:
    from util.evaluation.metrics import EpisodeCounts
    from util.files.checks import InputFiles

FORMAT = 'sccan-episodes/1'
HEADER_KEYS = ('data_set', 'split', 'shot', 'classes', 'seeds', 'episodes')
Pair = Tuple[str, str]


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the line."""


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """One line of a manifest: which episode (seed, number e), what it showed (util.episodes
    Episode) and, once scored, its background/foreground intersection and union."""
    seed: int
    index: int
    episode: Episode
    intersection: Optional[Tuple[int, int]] = None
    union: Optional[Tuple[int, int]] = None

    def identity(self) -> Tuple[int, int, Pair, Tuple[Pair, ...], int]:
        """What the episode was, without its score: equal identities are the same episode."""
        e = self.episode
        return (self.seed, self.index, e.query, e.supports, e.class_id)

    def to_json(self) -> dict:
        e = self.episode
        line = {'seed': self.seed, 'index': self.index, 'query': list(e.query),
                'supports': [list(s) for s in e.supports], 'class': e.class_id}
        if self.intersection is not None:
            line.update(intersection=list(self.intersection), union=list(self.union))
        return line


@dataclasses.dataclass(frozen=True)
class Manifest:
    path: str
    header: dict
    records: List[EpisodeRecord]

    @property
    def scored(self) -> bool:
        return all(r.intersection is not None for r in self.records)

    def seeds(self) -> List[int]:
        return list(dict.fromkeys(r.seed for r in self.records))

    def counts(self) -> List[RunCounts]:
        """The per-episode counts of each seed (in the header's class order), for
        util.evaluation.uncertainty."""
        if not self.scored:
            raise ManifestError(f'{self.path}: its episodes are not scored (no intersection and '
                                'union): replay it with test_sccan.py --episodes-from and '
                                '--save-episodes first')
        classes = self.header['classes']
        per_seed = []
        for seed in self.seeds():
            mine = [r for r in self.records if r.seed == seed]
            per_seed.append(RunCounts.of([classes.index(r.episode.class_id) for r in mine],
                                             [r.intersection for r in mine],
                                             [r.union for r in mine], len(classes)))
        return per_seed

    def digest(self) -> str:
        """SHA-256 of the episodes' identities: two manifests with the same digest hold the
        same episodes in the same order, whatever scored them."""
        return episodes_digest(self.records)


def episodes_digest(records: Sequence[EpisodeRecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.identity(), separators=(',', ':')).encode())
        h.update(b'\n')
    return h.hexdigest()


def make_header(data_set: str, split: int, shot: int, classes: Iterable[int], seeds: Iterable[int],
                episodes: int, source: str, checkpoint: Optional[Dict[str, Any]] = None,
                config: Optional[Dict[str, Any]] = None, class_names: Optional[Iterable[str]] = None) -> dict:
    """The header line. checkpoint / config: identity dicts (path, sha256, ...) or None;
    class_names: the classes' names, where the data set has names."""
    header = {'format': FORMAT, 'data_set': data_set, 'split': int(split), 'shot': int(shot),
              'classes': [int(c) for c in classes], 'seeds': [int(s) for s in seeds],
              'episodes': int(episodes), 'source': source, 'checkpoint': checkpoint,
              'config': config}
    if class_names is not None:
        header['class_names'] = [str(name) for name in class_names]
    return header


def file_identity(path: Union[str, os.PathLike[str]]) -> dict:
    """{'path': absolute path, 'sha256': digest of the content}."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return {'path': os.path.abspath(path), 'sha256': h.hexdigest()}


def manifest_text(header: dict, records: Sequence[EpisodeRecord]) -> str:
    lines = [json.dumps(header)] + [json.dumps(r.to_json()) for r in records]
    return '\n'.join(lines) + '\n'


def write_manifest(path: str, header: dict, records: Sequence[EpisodeRecord]) -> dict:
    """Write a manifest atomically; returns what a report keeps of it: {'path', 'digest' (of its
    episodes), 'sha256' (of the file: its scores too)}."""
    text = manifest_text(header, records)
    write_atomic(path, text)
    return {'path': path, 'digest': episodes_digest(records),
            'sha256': hashlib.sha256(text.encode()).hexdigest()}


# ---- reading ----------------------------------------------------------------------------------
def read_manifest(path: str) -> Manifest:
    """The manifest at `path`, read whole; ManifestError naming the first line that is not what
    a manifest holds (see the module's doc)."""
    lines = read_text(path, 'episode manifest').splitlines()
    if not lines:
        raise ManifestError(f'{path}: empty file, not an episode manifest')
    header = _header(path, _json_line(path, 1, lines[0]))
    numbered = [(n, line) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    if not numbered:
        raise ManifestError(f'{path}: no episodes after the header')
    records, order = [], _EpisodeOrder(path, header)
    for n, line in numbered:
        record = _record(path, n, _json_line(path, n, line), header)
        order.check(n, record)
        records.append(record)
    order.check_complete()
    scored = [r.intersection is not None for r in records]
    if any(scored) and not all(scored):
        n = numbered[scored.index(not scored[0])][0]
        raise ManifestError(f'{path} line {n}: {"not " if scored[0] else ""}scored (no '
                            'intersection and union), unlike line 2: a manifest is scored whole '
                            'or not at all')
    return Manifest(path, header, records)


def _header(path, header):
    """The header, checked: its format, keys and their types."""
    if header.get('format') != FORMAT:
        raise ManifestError(f'{path} line 1: not an episode manifest header (expected "format": '
                            f'"{FORMAT}", got {header.get("format")!r})')
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise ManifestError(f'{path} line 1: header without {", ".join(missing)}')
    integers = lambda v: isinstance(v, list) and v and all(type(x) is int for x in v)  # noqa: E731
    expected = {'split': (lambda v: type(v) is int, 'an integer'),
                'shot': (lambda v: type(v) is int and v >= 1, 'a positive integer'),
                'episodes': (lambda v: type(v) is int and v >= 1, 'a positive integer'),
                'classes': (integers, 'a list of integers'),
                'seeds': (lambda v: integers(v) and len(set(v)) == len(v),
                          'a list of distinct integers')}
    for key, (fits, what) in expected.items():
        if not fits(header[key]):
            raise ManifestError(f'{path} line 1: "{key}" must be {what}, got {header[key]!r}')
    return header


class _EpisodeOrder:
    """The order a manifest's lines must follow: seed by seed as in the header, each seed's
    episodes numbered 0, 1, ... (each once), `episodes` of them."""

    def __init__(self, path, header):
        self.path, self.seeds, self.episodes = path, header['seeds'], header['episodes']
        self.count = {}             # episodes seen of each seed
        self.first_line = {}        # (seed, index) → line
        self.current = None

    def check(self, n, record):
        where, seed, index = f'{self.path} line {n}', record.seed, record.index
        if seed not in self.seeds:
            raise ManifestError(f"{where}: seed {seed} is not one of the header's seeds "
                                f'{self.seeds}')
        if (seed, index) in self.first_line:
            raise ManifestError(f'{where}: episode {index} of seed {seed} again (first on line '
                                f'{self.first_line[seed, index]}): each episode is listed once')
        if seed != self.current:                   # a seed begins
            self.check_seed_begins(where, seed)
        expected = self.count.get(seed, 0)
        if index != expected:
            raise ManifestError(f'{where}: episode {index} of seed {seed} where episode '
                                f'{expected} comes next (episodes are numbered 0, 1, ... in '
                                'order)')
        if index >= self.episodes:
            raise ManifestError(f'{where}: episode {index} of seed {seed}, past the '
                                f"header's {self.episodes} episodes per seed")
        self.current, self.count[seed] = seed, expected + 1
        self.first_line[seed, index] = n

    def check_seed_begins(self, where, seed):
        if seed in self.count:
            raise ManifestError(f"{where}: seed {seed} again after seed {self.current}'s "
                                'episodes: a manifest lists its episodes seed by seed')
        if self.current is not None and self.count[self.current] != self.episodes:
            raise ManifestError(f'{where}: seed {seed} begins after {self.count[self.current]} '
                                f'episodes of seed {self.current}, but the header promises '
                                f'{self.episodes} of each seed')
        next_seed = self.seeds[len(self.count)]
        if seed != next_seed:
            raise ManifestError(f"{where}: episodes of seed {seed} where the header's order "
                                f'{self.seeds} has seed {next_seed} next')

    def check_complete(self):
        for seed in self.seeds:
            if self.count.get(seed, 0) != self.episodes:
                raise ManifestError(f'{self.path} line 1: the header promises {self.episodes} '
                                    f'episodes of each seed, but seed {seed} has '
                                    f'{self.count.get(seed, 0)}')


def _json_line(path, n, line):
    try:
        value = json.loads(line)
    except ValueError as e:
        raise ManifestError(f'{path} line {n}: not JSON ({e})') from None
    if not isinstance(value, dict):
        raise ManifestError(f'{path} line {n}: expected a JSON object')
    return value


def _pair(value):
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(p, str) and p for p in value)):
        raise TypeError
    return tuple(value)


def _counts(value):
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and v >= 0 for v in value)):
        raise TypeError
    return tuple(value)


def _record(path, n, line, header):
    where = f'{path} line {n}'
    try:
        episode = Episode(_pair(line['query']), tuple(_pair(s) for s in line['supports']),
                          line['class'])
        fields = dict(seed=line['seed'], index=line['index'], episode=episode)
        if 'intersection' in line or 'union' in line:
            fields.update(intersection=_counts(line['intersection']), union=_counts(line['union']))
        if not all(isinstance(v, int) for v in (fields['seed'], fields['index'], episode.class_id)):
            raise TypeError
    except KeyError as e:
        raise ManifestError(f'{where}: episode without "{e.args[0]}"') from None
    except TypeError:
        raise ManifestError(f'{where}: not an episode (seed, index, class: integers; query and '
                            'each support: [image, label]; intersection, union: [bg, fg] '
                            'counts)') from None
    if len(episode.supports) != header['shot']:
        raise ManifestError(f'{where}: {len(episode.supports)} supports in a '
                            f'{header["shot"]}-shot manifest')
    if episode.class_id not in header['classes']:
        raise ManifestError(f'{where}: class {episode.class_id} is not one of the header\'s '
                            f'classes {header["classes"]}')
    if 'intersection' in fields:
        _check_counts(where, fields['intersection'], fields['union'])
    return EpisodeRecord(**fields)


def _check_counts(where, intersection, union):
    """Counts a scoring can give: every pixel the prediction and the label disagree on is in
    the union of both background and foreground and in neither intersection, so union −
    intersection is the same for both, and never negative
    (util.evaluation.metrics.intersection_union)."""
    disagree = [u - i for i, u in zip(intersection, union)]
    if disagree[0] != disagree[1] or disagree[0] < 0:
        raise ManifestError(f'{where}: counts no scoring gives (intersection {list(intersection)}, '
                            f'union {list(union)}: union − intersection must be the same for '
                            'background and foreground, and not negative); edited by hand?')


# ---- fitting a run ----------------------------------------------------------------------------
def check_fits(manifest: Manifest, data_set: str, split: int, shot: int, classes: Sequence[int],
               data_root: str, files: Optional[InputFiles] = None, lists: str = '') -> None:
    """Refuse a manifest that another data set, fold or a smaller shot made, or whose files are
    not under `data_root` or, given the data set's `files` (util.files.checks.InputFiles), not among
    them (e.g. a query that is not in the val list; `lists` names them); the message names the
    first offending line."""
    h, path = manifest.header, manifest.path
    if h['data_set'] != data_set:
        raise ManifestError(f'{path} line 1: episodes of data set {h["data_set"]!r}, but this '
                            f'run tests {data_set!r}')
    if h['split'] != split:
        raise ManifestError(f'{path} line 1: episodes of fold {h["split"]}, but this run tests '
                            f'fold {split}')
    if shot > h['shot']:
        raise ManifestError(f'{path} line 1: {h["shot"]}-shot episodes cannot be replayed '
                            f'{shot}-shot (a manifest gives at most its own number of supports)')
    if list(h['classes']) != list(classes):
        raise ManifestError(f'{path} line 1: classes {h["classes"]}, but this run scores '
                            f'{list(classes)}')
    checked = set()         # episodes share images: each file is looked for once
    for n, record in enumerate(manifest.records, start=2):
        episode = record.episode
        for role, pair in (('query', episode.query),) + tuple(('support', s) for s in episode.supports):
            for kind, relative in zip(('image', 'label'), pair):
                if relative in checked:
                    continue
                checked.add(relative)
                full = os.path.join(data_root, relative)
                if not os.path.isfile(full):
                    raise ManifestError(f'{path} line {n}: {role} {kind} {relative} not found '
                                        f'under the data root {data_root}')
                if files is not None and files.find(full) is None:
                    raise ManifestError(f"{path} line {n}: {role} {kind} {relative} is not one "
                                        f"of this data set's files{f' ({lists})' if lists else ''}"
                                        ': the episode cannot be one of its episodes')


def scored_differently(manifest: Manifest, records: Sequence[EpisodeRecord]) -> List[str]:
    """The episodes of a scored manifest that `records` (the same episodes, scored again) scored
    otherwise, each as 'seed s episode e (line n): ∩ [bg, fg] → [...], ∪ [...] → [...]'."""
    return [f'seed {old.seed} episode {old.index} (line {n}): ∩ {list(old.intersection)} → '
            f'{list(new.intersection)}, ∪ {list(old.union)} → {list(new.union)}'
            for n, (old, new) in enumerate(zip(manifest.records, records), start=2)
            if (old.intersection, old.union) != (new.intersection, new.union)]


def replay_plans(manifest: Manifest, shot: int) -> Dict[int, List[Episode]]:
    """{seed: its Episodes in order} to replay `shot`-shot. With fewer shots than the manifest's,
    each episode keeps the supports drawn first: both our sampler and the authors' stack the
    supports in reverse draw order, so these are the last `shot` in stacking order (kept in
    that order)."""
    plans = {seed: [] for seed in manifest.seeds()}
    for r in manifest.records:
        supports = r.episode.supports
        plans[r.seed].append(dataclasses.replace(r.episode, supports=supports[len(supports) - shot:]))
    return plans


def scored_records(seed: int, plan: Sequence[Episode], counts: EpisodeCounts) -> List[EpisodeRecord]:
    """The manifest lines of a seed's evaluation: plan[e] with its counts as scored
    (util.evaluation.metrics.EpisodeCounts, in episode order)."""
    if counts.episode.tolist() != list(range(len(plan))):
        raise ValueError(f'{len(counts.episode)} scored episodes for a plan of {len(plan)}')
    return [EpisodeRecord(seed, e, episode, tuple(i), tuple(u))
            for e, (episode, i, u) in enumerate(zip(plan, counts.intersection.tolist(),
                                                     counts.union.tolist()))]
