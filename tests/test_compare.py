"""tools/compare.py on manifests and reports: paired when the episodes are the same, unpaired
(and saying why) otherwise, one-line errors for what it cannot compare."""
import json
import shutil

import numpy as np
import pytest

from helpers import assert_one_error, run_cli, synthetic_counts, write_run
from util.episodes import Episode
from tools import compare
from util.evaluation.manifest import (EpisodeRecord, file_identity, make_header, read_manifest,
                                      write_manifest)
from util.evaluation.uncertainty import scores


def better(counts, gain=0.05, seed=1):
    """The same episodes scored by a model that overlaps more on most of them: foreground
    pixels it missed (in the background's union, as predicted background) now found."""
    rng = np.random.default_rng(seed)
    inter, union = counts.intersection.copy(), counts.union.copy()
    extra = (union[:, 1] - inter[:, 1]) * np.clip(gain + rng.normal(0, 0.05, len(inter)), 0, 1)
    inter[:, 1] += extra.astype(np.int64)
    union[:, 0] -= extra.astype(np.int64)
    return type(counts)(counts.class_index, inter, union, counts.num_classes)


def test_the_same_run_twice_differs_by_exactly_zero(tmp_path, capsys):
    counts = synthetic_counts(40)
    a = write_run(tmp_path / 'a.jsonl', counts)
    b = write_run(tmp_path / 'b.jsonl', counts)
    result = compare.main([a, b, '--resamples', '300'])
    assert result['paired'] and result['difference']['mIoU'] == 0
    assert result['interval']['mIoU'] == [0.0, 0.0] and result['interval']['FB-IoU'] == [0.0, 0.0]
    assert capsys.readouterr().out.splitlines()[-1].endswith('no difference at all.')


def test_two_models_on_the_same_episodes(tmp_path, capsys):
    counts_a = synthetic_counts(60)
    counts_b = better(counts_a)
    a, b = write_run(tmp_path / 'a.jsonl', counts_a), write_run(tmp_path / 'b.jsonl', counts_b)
    paired = compare.main([a, b, '--resamples', '1000'])
    out = capsys.readouterr().out
    expected = scores(counts_b)['mIoU'] - scores(counts_a)['mIoU']
    assert paired['paired'] and paired['difference']['mIoU'] == expected > 0
    lo, hi = paired['interval']['mIoU']
    assert 0 < lo < expected < hi
    assert out.splitlines()[-1].endswith('larger than the noise.') and 'paired' in out.splitlines()[-1]
    assert len([line for line in out.splitlines() if line.startswith('  class ')]) == 5
    # Scored on other episodes (other queries): unpaired, says why, and the interval is wider.
    c = write_run(tmp_path / 'c.jsonl', counts_b, queries=list(range(1, 301)))
    unpaired = compare.main([a, c, '--resamples', '1000'])
    out = capsys.readouterr().out
    assert not unpaired['paired'] and 'episode 0 of seed 321 (manifest line 2) shows other images' in out
    assert unpaired['difference']['mIoU'] == expected
    u_lo, u_hi = unpaired['interval']['mIoU']
    assert u_hi - u_lo > 2 * (hi - lo)


def test_a_difference_that_rounds_to_zero_is_no_difference(tmp_path, capsys):
    """One foreground pixel more found in one episode of each class: an interval above 0 that
    shows as +0.0 … +0.0 is 'no difference', not 'larger than the noise'."""
    counts = synthetic_counts(40)
    inter, union = counts.intersection.copy(), counts.union.copy()
    missed = union[:, 1] > inter[:, 1]
    changed = [int(np.flatnonzero(missed & (counts.class_index == c))[0]) for c in range(5)]
    inter[changed, 1] += 1
    union[changed, 0] -= 1
    a = write_run(tmp_path / 'a.jsonl', counts)
    b = write_run(tmp_path / 'b.jsonl', type(counts)(counts.class_index, inter, union, 5))
    result = compare.main([a, b, '--resamples', '300'])
    assert result['interval']['mIoU'][0] > 0
    assert result['verdict'].endswith('+0.0 points, 95 % interval +0.0 … +0.0 (paired: the same '
                                      'episodes): no difference (the whole interval rounds to '
                                      '0.0 points).')


def test_a_benchmark_without_folds_names_its_classes(tmp_path, capsys):
    counts = synthetic_counts(10, num_classes=3)
    header = make_header('isic', 0, 1, [0, 1, 2], [0], 30, 'test',
                         class_names=['melanoma', 'nevus', 'keratosis'])
    records = [EpisodeRecord(0, e, Episode((f'q{e}.jpg', f'q{e}.png'), ((f's{e}.jpg', f's{e}.png'),), int(c)),
                             tuple(map(int, i)), tuple(map(int, u)))
               for e, (c, i, u) in enumerate(zip(counts.class_index, counts.intersection, counts.union))]
    a = write_manifest(str(tmp_path / 'a.jsonl'), header, records)['path']
    b = write_manifest(str(tmp_path / 'b.jsonl'), header, records)['path']
    compare.main([a, b, '--resamples', '50'])
    out = capsys.readouterr().out
    assert '(isic, 1-shot, seeds [0], 30 episodes)' in out and ' fold ' not in out
    assert [line.split(':')[0] for line in out.splitlines() if line.startswith('  class ')] == \
        ['  class melanoma', '  class nevus', '  class keratosis']


def test_reports_name_their_manifest(tmp_path):
    manifest = write_run(tmp_path / 'runs' / 'a.jsonl', synthetic_counts(20))
    report = tmp_path / 'runs' / 'a.json'
    report.write_text(json.dumps({'manifest': {'path': 'a.jsonl',
                                               'digest': read_manifest(manifest).digest()}}))
    assert compare.main([str(report), manifest, '--resamples', '50'])['paired']


@pytest.mark.parametrize('case', ['report without manifest', 'not json', 'unscored', 'other classes',
                                  'digest', 'edited manifest', 'same file', 'missing'])
def test_what_cannot_be_compared_is_one_line(tmp_path, capsys, case):
    counts = synthetic_counts(10)
    good = write_run(tmp_path / 'good.jsonl', counts)
    bad = tmp_path / 'bad.json'
    if case == 'report without manifest':
        bad.write_text(json.dumps({'mean': {'mIoU': 0.5}}))
        needles = [f'{bad}: a report without an episode manifest; test with test_sccan.py --save-episodes']
    elif case == 'not json':
        bad.write_text('mIoU 0.5\n')
        needles = [f'{bad}: neither a test report (JSON) nor an episode manifest']
    elif case == 'unscored':
        lines = open(good).read().splitlines()
        records = [json.loads(line) for line in lines[1:]]
        for r in records:
            del r['intersection'], r['union']
        bad.write_text('\n'.join([lines[0]] + [json.dumps(r) for r in records]))
        needles = [f'{bad}: its episodes are not scored']
    elif case == 'other classes':
        write_run(bad, counts, classes=[6, 7, 8, 9, 10])
        needles = [f'{good} and {bad} score different classes '
                   '(pascal [1, 2, 3, 4, 5], pascal [6, 7, 8, 9, 10])']
    elif case == 'digest':
        bad.write_text(json.dumps({'manifest': {'path': 'good.jsonl', 'digest': 'abc'}}))
        needles = [f'{bad}: its manifest', 'holds other episodes than the report scored']
    elif case == 'edited manifest':
        # a report and its manifest, then scores moved in the manifest (the episodes unchanged)
        manifest = tmp_path / 'run.jsonl'
        shutil.copyfile(write_run(tmp_path / 'tmp.jsonl', counts), manifest)
        bad.write_text(json.dumps({'manifest': {'path': 'run.jsonl',
                                                'sha256': file_identity(manifest)['sha256'],
                                                'digest': read_manifest(str(manifest)).digest()}}))
        write_run(manifest, better(counts))
        needles = [f'{bad}: its manifest {manifest} is not the file the report wrote']
    elif case == 'same file':
        bad = good
        needles = [f'{good} and {good} are the same file: compare two runs']
    else:
        bad = tmp_path / 'absent.json'
        needles = [f'report or manifest not found: {bad}']
    assert_one_error(*run_cli(compare.main, [good, str(bad)], capsys)[::2], *needles)
