"""test_sccan.py --save-episodes / --episodes-from end to end (tiny model, generated PASCAL tree):
a replay reproduces the report bit for bit, manifests of another run are refused by line, the
authors' episodes (committed manifest) are scored, and tools/compare.py reads the reports."""
import json
import os
import shutil

import cv2
import pytest
import torch

from model.checkpoint import weights_checkpoint
from helpers import assert_one_error, files_below, make_pascal_config, run_cli, without_timings
from util.config import load_config
from util.evaluation.manifest import file_identity, read_manifest
from util.experiment import ready_model
from util.files.writer import save_checkpoint

import test_sccan
from tools import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN = os.path.join(ROOT, 'tests', 'golden', 'authors_episodes_pascal_split0_1shot.jsonl')
OPTS = ['model', 'tiny', 'val_size', '57', 'workers', '0', 'batch_size_val', '2', 'test_num', '6']


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    """helpers.make_pascal's default tree (the one the authors' golden manifest was drawn on),
    a config for it and two tiny checkpoints of different random weights."""
    root = tmp_path_factory.mktemp('manifests')
    config = make_pascal_config(str(root))
    checkpoints = []
    for n in (1, 2):
        torch.manual_seed(n)
        cfg = load_config(config, OPTS)
        path = str(root / f'tiny{n}.pth')
        save_checkpoint(weights_checkpoint(ready_model(cfg, 'cpu'), epoch=1, shot=1,
                                           config=cfg.to_dict()), path)
        checkpoints.append(path)
    return {'root': root, 'config': config, 'checkpoints': checkpoints}


def run_test(bench, out, *extra, checkpoint=0, opts=()):
    """test_sccan.py's command line; returns the report it wrote."""
    assert test_sccan.main(['--config', bench['config'], '--weight', bench['checkpoints'][checkpoint],
                            '--out', str(out), *extra, '--opts', *OPTS, *opts]) == 0
    with open(out) as f:
        return json.load(f)


def measured(report):
    """What a report measured: all but timings, the options and the files it names."""
    return {**{k: v for k, v in report.items()
               if k not in ('overrides', 'manifest', 'episodes_from')},
            'seeds': [without_timings(seed) for seed in report['seeds']]}


def test_save_then_replay_gives_the_identical_report(bench, tmp_path):
    first = run_test(bench, tmp_path / 'a.json', '--seeds', '3', '4', '--save-episodes',
                            str(tmp_path / 'a.jsonl'))
    manifest = read_manifest(str(tmp_path / 'a.jsonl'))
    assert manifest.seeds() == [3, 4] and len(manifest.records) == 12 and manifest.scored
    assert first['manifest'] == {'path': 'a.jsonl', 'digest': manifest.digest(),
                                 'sha256': file_identity(tmp_path / 'a.jsonl')['sha256']}
    assert manifest.header['checkpoint']['path'] == bench['checkpoints'][0]
    # the counts in the manifest are those the report was scored from
    counts = manifest.counts()[0]
    assert counts.class_episodes() == first['seeds'][0]['class_episodes']
    assert first['uncertainty']['seeds'][0]['class_episodes'] == first['seeds'][0]['class_episodes']
    replay = run_test(bench, tmp_path / 'b.json', '--episodes-from', str(tmp_path / 'a.jsonl'),
                             '--save-episodes', str(tmp_path / 'b.jsonl'))
    assert measured(replay) == measured(first)
    assert replay['episodes_from'] == {'path': str(tmp_path / 'a.jsonl'), 'digest': manifest.digest(),
                                       'scored_differently': 0}
    again = read_manifest(str(tmp_path / 'b.jsonl'))
    assert again.records == manifest.records            # the same episodes, the same pixel counts
    # one checkpoint scored twice on the same episodes: exactly no difference
    same = compare.main([str(tmp_path / 'a.json'), str(tmp_path / 'b.json'), '--resamples', '200'])
    assert same['paired'] and same['difference']['mIoU'] == 0 and same['interval']['mIoU'] == [0.0, 0.0]


def test_two_checkpoints_on_the_same_episodes(bench, tmp_path):
    a = run_test(bench, tmp_path / 'a.json', '--save-episodes', str(tmp_path / 'a.jsonl'),
                        '--episodes-from', GOLDEN)
    b = run_test(bench, tmp_path / 'b.json', '--save-episodes', str(tmp_path / 'b.jsonl'),
                        '--episodes-from', GOLDEN, checkpoint=1)
    result = compare.main([str(tmp_path / 'a.json'), str(tmp_path / 'b.json'), '--resamples', '200'])
    assert result['paired']
    assert result['difference']['mIoU'] == b['mean']['mIoU'] - a['mean']['mIoU'] != 0
    assert result['difference']['FB-IoU'] == b['mean']['FB-IoU'] - a['mean']['FB-IoU']


def test_the_authors_episodes_are_scored(bench, tmp_path):
    report = run_test(bench, tmp_path / 'r.json', '--episodes-from', GOLDEN,
                             '--save-episodes', str(tmp_path / 'r.jsonl'))
    golden = read_manifest(GOLDEN)
    assert report['episodes'] == 20 and [s['seed'] for s in report['seeds']] == [321]
    assert sum(report['seeds'][0]['class_episodes']) == 20
    scored = read_manifest(str(tmp_path / 'r.jsonl'))
    assert [r.identity() for r in scored.records] == [r.identity() for r in golden.records]
    lo, hi = report['uncertainty']['pooled']['mIoU']
    assert lo <= report['mean']['mIoU'] <= hi


def test_fewer_shots_replay_the_supports_drawn_first(bench, tmp_path):
    five = run_test(bench, tmp_path / 'five.json', '--any-shot', '--save-episodes',
                    str(tmp_path / 'five.jsonl'), opts=['shot', '5'])
    assert five['shot'] == 5
    one = run_test(bench, tmp_path / 'one.json', '--episodes-from',
                          str(tmp_path / 'five.jsonl'), '--save-episodes', str(tmp_path / 'one.jsonl'))
    for r5, r1 in zip(read_manifest(str(tmp_path / 'five.jsonl')).records,
                      read_manifest(str(tmp_path / 'one.jsonl')).records):
        assert r1.episode.supports == r5.episode.supports[-1:] and r1.episode.query == r5.episode.query
    assert one['shot'] == 1


def manifest_with(source, target, edit):
    lines = open(source).read().splitlines()
    header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    edit(header, records)
    target.write_text('\n'.join(json.dumps(x) for x in [header] + records) + '\n')
    return str(target)


@pytest.mark.parametrize('case', ['other fold', 'missing file', 'not in the val list', 'more shots',
                                  'seeds too', 'manifest as output'])
def test_manifests_that_do_not_fit_are_refused_by_line(bench, tmp_path, capsys, case):
    argv = ['--config', bench['config'], '--weight', bench['checkpoints'][0],
            '--out', str(tmp_path / 'r.json')]
    if case == 'other fold':
        path = manifest_with(GOLDEN, tmp_path / 'm.jsonl', lambda h, r: h.update(split=1))
        needles = [f'{path} line 1: episodes of fold 1, but this run tests fold 0']
    elif case == 'missing file':
        def edit(h, records):
            records[6]['supports'][0][0] = 'JPEGImages/2008_999999.jpg'
        path = manifest_with(GOLDEN, tmp_path / 'm.jsonl', edit)
        needles = [f'{path} line 8: support image JPEGImages/2008_999999.jpg not found under the '
                   'data root']
    elif case == 'not in the val list':
        train_query = open(load_config(bench['config']).train_list).readline().split()

        def edit(h, records):
            records[2]['query'] = train_query
        path = manifest_with(GOLDEN, tmp_path / 'm.jsonl', edit)
        needles = [f"{path} line 4: query image {train_query[0]} is not one of this data set's "
                   f'files (val_list {load_config(bench["config"]).val_list})']
    elif case == 'more shots':
        path = GOLDEN
        argv += ['--any-shot']
        needles = [f'{GOLDEN} line 1: 1-shot episodes cannot be replayed 5-shot']
    elif case == 'seeds too':
        path = GOLDEN
        argv += ['--seeds', '5']
        needles = ['--episodes-from replays the seeds and episodes of its manifest: drop --seeds']
    else:
        path = shutil.copyfile(GOLDEN, tmp_path / 'm.jsonl')
        argv += ['--save-episodes', str(path)]
        needles = [f'output {path} would overwrite the input {path}']
    before = files_below(str(tmp_path))
    opts = OPTS + (['shot', '5'] if case == 'more shots' else [])
    status, _, err = run_cli(test_sccan.main, argv + ['--episodes-from', str(path), '--opts', *opts],
                             capsys)
    assert_one_error(status, err, *needles)
    assert files_below(str(tmp_path)) == before


def test_a_replay_says_which_episodes_scored_otherwise_than_recorded(bench, tmp_path, capsys):
    """The same checkpoint on the same episodes after a label was edited: the report counts the
    episodes that scored differently, and the log names them."""
    run_test(bench, tmp_path / 'a.json', '--save-episodes', str(tmp_path / 'a.jsonl'))
    first = read_manifest(str(tmp_path / 'a.jsonl')).records[0]
    label = os.path.join(load_config(bench['config']).data_root, first.episode.query[1])
    original = cv2.imread(label, cv2.IMREAD_UNCHANGED)
    try:
        edited = original.copy()
        edited[:, :edited.shape[1] // 2] = 0        # half of the label made background
        cv2.imwrite(label, edited)
        capsys.readouterr()
        report = run_test(bench, tmp_path / 'b.json', '--episodes-from', str(tmp_path / 'a.jsonl'))
    finally:
        cv2.imwrite(label, original)
    changed = report['episodes_from']['scored_differently']
    assert changed >= 1
    err = capsys.readouterr().err
    assert (f'{changed} of 6 replayed episodes scored differently from the counts '
            f'{tmp_path / "a.jsonl"} recorded with this same checkpoint') in err
    assert f'seed 321 episode 0 (line 2): ∩ {list(first.intersection)} → ' in err


def test_classes_without_episodes_are_named_with_how_mIoU_counts_them(bench, tmp_path, capsys):
    report = run_test(bench, tmp_path / 'r.json', '--episodes', '2')
    seed = report['seeds'][0]
    empty = [str(c) for c, n in zip(seed['class_ids'], seed['class_episodes']) if n == 0]
    assert len(empty) == 3
    assert (f"seed 321: 3 of 5 classes have no episode (class {', '.join(empty)}): mIoU counts "
            "them as IoU 0, as the authors' formula does; test at least 5 episodes"
            in capsys.readouterr().err)


def test_the_report_is_drawn(bench, tmp_path):
    pytest.importorskip('matplotlib', reason='matplotlib (an optional extra) is not installed')
    run_test(bench, tmp_path / 'r.json', '--episodes', '4', '--plot', str(tmp_path / 'r.png'))
    image = cv2.imread(str(tmp_path / 'r.png'))
    assert image is not None and image.shape[2] == 3
