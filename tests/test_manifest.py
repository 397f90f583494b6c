"""Episode manifests (util.evaluation.manifest): written and read back, refused with the offending
line named."""
import json
import os

import pytest

from util.episodes import Episode
from util.evaluation.manifest import (EpisodeRecord, ManifestError, check_fits, make_header,
                                      manifest_text, read_manifest, replay_plans)


def pair(stem):
    return (f'JPEGImages/{stem}.jpg', f'SegmentationClassAug/{stem}.png')


def records(shot=2, scored=True):
    """Three episodes of seed 5 (classes 1, 2, 1) and three of seed 6 (2, 1, 2)."""
    out = []
    for seed, index, query, cls in ((5, 0, 'q0', 1), (5, 1, 'q1', 2), (5, 2, 'q0', 1),
                                    (6, 0, 'q1', 2), (6, 1, 'q0', 1), (6, 2, 'q1', 2)):
        counts = dict(intersection=(10 + index, index), union=(12 + index, 2 + index)) if scored else {}
        episode = Episode(pair(query), tuple(pair(f's{cls}{k}') for k in range(shot)), cls)
        out.append(EpisodeRecord(seed, index, episode, **counts))
    return out


def write(tmp_path, header=None, lines=None, name='m.jsonl', shot=2):
    header = header or make_header('pascal', 0, shot, [1, 2], [5, 6], 3, 'test')
    path = tmp_path / name
    text = manifest_text(header, records(shot))
    if lines is not None:
        text = '\n'.join([json.dumps(header)] + lines) + '\n'
    path.write_text(text)
    return str(path)


def test_written_and_read_back(tmp_path):
    manifest = read_manifest(write(tmp_path))
    assert manifest.records == records() and manifest.seeds() == [5, 6] and manifest.scored
    first, second = manifest.counts()
    assert first.class_index.tolist() == [0, 1, 0] and second.class_index.tolist() == [1, 0, 1]
    assert first.intersection.tolist() == [[10, 0], [11, 1], [12, 2]]
    assert second.union.tolist() == [[12, 2], [13, 3], [14, 4]]
    # the digest is that of the episodes, not of their scores
    unscored = tmp_path / 'u.jsonl'
    unscored.write_text(manifest_text(manifest.header, records(scored=False)))
    assert read_manifest(str(unscored)).digest() == manifest.digest()
    with pytest.raises(ManifestError, match='its episodes are not scored'):
        read_manifest(str(unscored)).counts()


@pytest.mark.parametrize('line, message', [
    ('{"seed": 5, "index": 0', r'line 3: not JSON'),
    ('{"seed": 5, "index": 0, "query": ["a.jpg", "a.png"], "class": 1}',
     r'line 3: episode without "supports"'),
    ('{"seed": 5, "index": 0, "query": ["a.jpg"], "supports": [], "class": 1}', r'line 3: not an episode'),
    ('{"seed": 5, "index": 0, "query": ["a.jpg", "a.png"], "supports": [["b.jpg", "b.png"]], "class": 1}',
     r'line 3: 1 supports in a 2-shot manifest'),
    ('{"seed": 5, "index": 0, "query": ["a.jpg", "a.png"], "supports": [["b.jpg", "b.png"], '
     '["c.jpg", "c.png"]], "class": 7}', r"line 3: class 7 is not one of the header's classes \[1, 2\]"),
])
def test_bad_lines_are_named(tmp_path, line, message):
    good = json.dumps(records()[0].to_json())
    with pytest.raises(ManifestError, match=message):
        read_manifest(write(tmp_path, lines=[good, line]))


def edited(n, **changes):
    """Line of records()[n] as JSON, with `changes` (None: the key removed)."""
    line = {**records()[n].to_json(), **changes}
    return json.dumps({k: v for k, v in line.items() if v is not None})


@pytest.mark.parametrize('lines, message', [
    ([edited(i) for i in (0, 1, 1, 2, 3, 4, 5)],
     r'line 4: episode 1 of seed 5 again \(first on line 3\): each episode is listed once'),
    ([edited(i) for i in (0, 2)], r'line 3: episode 2 of seed 5 where episode 1 comes next'),
    ([edited(0), edited(1), edited(2, seed=7)], r"line 4: seed 7 is not one of the header's seeds \[5, 6\]"),
    ([edited(i) for i in (0, 1, 3)],
     'line 4: seed 6 begins after 2 episodes of seed 5, but the header promises 3 of each seed'),
    ([edited(i) for i in (3, 4, 5, 0, 1, 2)],
     r"line 2: episodes of seed 6 where the header's order \[5, 6\] has seed 5 next"),
    ([edited(i) for i in (0, 1, 2, 3, 4)],
     'line 1: the header promises 3 episodes of each seed, but seed 6 has 2'),
    ([edited(i) for i in range(6)] + [edited(5, index=3)],
     "line 8: episode 3 of seed 6, past the header's 3 episodes per seed"),
    ([edited(0, intersection=[10, 7])] + [edited(i) for i in range(1, 6)],
     r'line 2: counts no scoring gives \(intersection \[10, 7\], union \[12, 2\]'),
    ([edited(0)] + [edited(i, intersection=None, union=None) for i in range(1, 6)],
     'line 3: not scored .*, unlike line 2: a manifest is scored whole or not at all'),
], ids=['duplicate', 'gap', 'unknown seed', 'seed cut short', 'seed order', 'fewer than promised',
        'more than promised', 'edited counts', 'partly scored'])
def test_a_manifest_is_read_whole_and_checked(tmp_path, lines, message):
    """A line given twice, a seed the header does not name, fewer or more episodes than the
    header promises, counts edited by hand: each is refused naming its line (a report made
    from it would count an episode twice, or say 50 episodes where 5 were scored)."""
    with pytest.raises(ManifestError, match=message):
        read_manifest(write(tmp_path, lines=lines))


@pytest.mark.parametrize('key, value, message', [
    ('episodes', 0, '"episodes" must be a positive integer, got 0'),
    ('seeds', [5, 5], r'"seeds" must be a list of distinct integers, got \[5, 5\]'),
    ('classes', '1 2', "\"classes\" must be a list of integers, got '1 2'"),
])
def test_header_values_are_checked(tmp_path, key, value, message):
    header = {**make_header('pascal', 0, 2, [1, 2], [5, 6], 3, 'test'), key: value}
    with pytest.raises(ManifestError, match=f'line 1: {message}'):
        read_manifest(write(tmp_path, header=header))


def test_bad_headers_are_named(tmp_path):
    with pytest.raises(ManifestError, match=r'line 1: not an episode manifest header'):
        read_manifest(write(tmp_path, header={'format': 'something else'}))
    with pytest.raises(ManifestError, match=r'line 1: header without seeds, episodes'):
        read_manifest(write(tmp_path, header={'format': 'sccan-episodes/1', 'data_set': 'pascal',
                                              'split': 0, 'shot': 2, 'classes': [1, 2]}))


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / 'data'
    for stem in ('q0', 'q1', 's10', 's11', 's20', 's21'):
        for relative in pair(stem):
            os.makedirs(root / os.path.dirname(relative), exist_ok=True)
            (root / relative).write_text('')
    return str(root)


def test_a_manifest_fits_its_run_only(tmp_path, data_root):
    manifest = read_manifest(write(tmp_path))
    check_fits(manifest, 'pascal', 0, 2, [1, 2], data_root)
    check_fits(manifest, 'pascal', 0, 1, [1, 2], data_root)              # fewer shots: fine
    for args, message in ((('coco', 0, 1, [1, 2]),
                           "line 1: episodes of data set 'pascal', but this run tests 'coco'"),
                          (('pascal', 1, 1, [1, 2]), 'line 1: episodes of fold 0, but this run tests fold 1'),
                          (('pascal', 0, 5, [1, 2]), 'line 1: 2-shot episodes cannot be replayed 5-shot'),
                          (('pascal', 0, 1, [1, 3]),
                           r'line 1: classes \[1, 2\], but this run scores \[1, 3\]')):
        with pytest.raises(ManifestError, match=message):
            check_fits(manifest, *args, data_root)
    os.remove(os.path.join(data_root, pair('s21')[1]))
    with pytest.raises(ManifestError, match=r'm.jsonl line 3: support label SegmentationClassAug/s21.png '
                                            'not found under the data root'):
        check_fits(manifest, 'pascal', 0, 2, [1, 2], data_root)


def test_replay_plans_take_the_supports_drawn_first(tmp_path):
    manifest = read_manifest(write(tmp_path, shot=3))
    plans = replay_plans(manifest, 3)
    assert list(plans) == [5, 6] and len(plans[5]) == 3 and len(plans[6]) == 3
    assert plans[5] == [r.episode for r in manifest.records[:3]]
    # stacked in reverse draw order: s12 was drawn first, then s11
    assert replay_plans(manifest, 1)[5][0].supports == (pair('s12'),)
    two = replay_plans(manifest, 2)[5][0]
    assert two.supports == (pair('s11'), pair('s12')) and two.query == pair('q0') and two.class_id == 1
