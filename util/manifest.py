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
manifest of episodes not scored yet, e.g. tools/authors_episodes.py's).
"""
import dataclasses
import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from util.episodes import Episode
from util.inputs import read_text
from util.outputs import write_atomic
from util.uncertainty import RunCounts

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

    def identity(self):
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
        util.uncertainty."""
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


def make_header(data_set, split, shot, classes, seeds, episodes, source, checkpoint=None,
                config=None) -> dict:
    """The header line. checkpoint / config: identity dicts (path, sha256, ...) or None."""
    return {'format': FORMAT, 'data_set': data_set, 'split': int(split), 'shot': int(shot),
            'classes': [int(c) for c in classes], 'seeds': [int(s) for s in seeds],
            'episodes': int(episodes), 'source': source, 'checkpoint': checkpoint,
            'config': config}


def file_identity(path) -> dict:
    """{'path': absolute path, 'sha256': digest of the content}."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return {'path': os.path.abspath(path), 'sha256': h.hexdigest()}


def manifest_text(header: dict, records: Sequence[EpisodeRecord]) -> str:
    lines = [json.dumps(header)] + [json.dumps(r.to_json()) for r in records]
    return '\n'.join(lines) + '\n'


def write_manifest(path, header: dict, records: Sequence[EpisodeRecord]) -> dict:
    """Write a manifest atomically; returns what a report keeps of it ({'path', 'digest'})."""
    write_atomic(path, manifest_text(header, records))
    return {'path': path, 'digest': episodes_digest(records)}


# ---- reading ----------------------------------------------------------------------------------
def read_manifest(path) -> Manifest:
    """The manifest at `path`; ManifestError naming the first line that is not what a manifest
    holds."""
    lines = read_text(path, 'episode manifest').splitlines()
    if not lines:
        raise ManifestError(f'{path}: empty file, not an episode manifest')
    header = _json_line(path, 1, lines[0])
    if header.get('format') != FORMAT:
        raise ManifestError(f'{path} line 1: not an episode manifest header (expected "format": '
                            f'"{FORMAT}", got {header.get("format")!r})')
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise ManifestError(f'{path} line 1: header without {", ".join(missing)}')
    records = [_record(path, n, _json_line(path, n, line), header)
               for n, line in enumerate(lines[1:], start=2) if line.strip()]
    if not records:
        raise ManifestError(f'{path}: no episodes after the header')
    return Manifest(path, header, records)


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
    return EpisodeRecord(**fields)


# ---- fitting a run ----------------------------------------------------------------------------
def check_fits(manifest: Manifest, data_set, split, shot, classes, data_root):
    """Refuse a manifest that another data set, fold or a smaller shot made, or whose files are
    not under `data_root`; the message names the first offending line."""
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
                if not os.path.isfile(os.path.join(data_root, relative)):
                    raise ManifestError(f'{path} line {n}: {role} {kind} {relative} not found '
                                        f'under the data root {data_root}')


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


def scored_records(seed: int, plan: Sequence[Episode], counts) -> List[EpisodeRecord]:
    """The manifest lines of a seed's evaluation: plan[e] with its counts as scored
    (util.metrics.EpisodeCounts, in episode order)."""
    if counts.episode.tolist() != list(range(len(plan))):
        raise ValueError(f'{len(counts.episode)} scored episodes for a plan of {len(plan)}')
    return [EpisodeRecord(seed, e, episode, tuple(i), tuple(u))
            for e, (episode, i, u) in enumerate(zip(plan, counts.intersection.tolist(),
                                                     counts.union.tolist()))]
