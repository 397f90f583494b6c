"""tools/reproduce.py on the synthetic benchmark: tiny checkpoints for all four folds, one table,
finished cells kept, missing checkpoints listed."""
import json
import os
import shutil

import pytest

from helpers import TINY
from model.checkpoint import weights_checkpoint
from tools import reproduce
from util.config import REPO_ROOT, load_config
from util.experiment import ready_model
from util.datasets.synthetic import write_benchmark
from util.files.run_paths import RunPaths
from util.files.writer import save_checkpoint



@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    """Synthetic data, and an experiment root holding one checkpoint of the tiny model per fold
    (random weights) under the authors' names, where train_sccan.py with the fold's config and
    these options writes its run (resnet14/: the tiny model's backbone)."""
    tmp = tmp_path_factory.mktemp('reproduce')
    lists = write_benchmark(str(tmp / 'data'), n_train=20, n_val=60)
    opts = ['data_root', str(tmp / 'data'), 'train_list', lists['train'], 'val_list', lists['val'],
            'list_dir', str(tmp / 'lists'), 'test_num', '10', *TINY]     # 2 per class
    exp = str(tmp / 'exp')
    for fold in range(4):
        config = reproduce.config_path(os.path.join(REPO_ROOT, 'config'), 'synthetic', fold, 50, 1)
        cfg = load_config(config, opts + ['exp_dir', exp])
        snapshot = RunPaths.of(cfg).snapshot
        path = os.path.join(snapshot, f'train_epoch_{fold}_0.{fold + 1}000.pth')
        save_checkpoint(weights_checkpoint(ready_model(cfg, 'cpu'), epoch=fold, shot=1,
                                           config=cfg.to_dict()), path)
    return exp, opts


def run(exp, opts, *extra):
    return reproduce.main(['--exp', exp, '--benchmarks', 'synthetic', '--layers', '50', '--shots', '1',
                           '--feature-cache-gb', '0', *extra, '--opts', *opts])


def test_one_command_tests_every_fold_and_writes_the_table(bench):
    exp, opts = bench
    (row,) = run(exp, opts)
    assert (row['benchmark'], row['layers'], row['shot']) == ('synthetic', 50, 1)
    assert sorted(row['folds']) == [0, 1, 2, 3]
    assert row['mIoU'] == pytest.approx(sum(row['folds'].values()) / 4)
    out = os.path.join(exp, 'reproduce')
    for fold in range(4):       # each fold is test_sccan.py's number for its checkpoint
        with open(os.path.join(out, 'cells', f'synthetic_split{fold}_resnet50_1shot.report.json')) as f:
            report = json.load(f)
        assert report['mean']['mIoU'] == row['folds'][fold] and report['split'] == fold
        assert (report['episodes'] == 10
                and report['checkpoint'].endswith(f'train_epoch_{fold}_0.{fold + 1}000.pth'))
        lo, hi = report['uncertainty']['pooled']['mIoU']        # ± half the fold's interval
        assert row['folds_half_width'][fold] == (hi - lo) / 2
    halves = list(row['folds_half_width'].values())          # the mean of 4 independent folds
    assert row['mIoU_half_width'] == pytest.approx(sum(h * h for h in halves) ** 0.5 / 4)
    with open(os.path.join(out, 'table.md')) as f:
        text = f.read()
    folds = ' | '.join(f'{100 * row["folds"][f]:.1f} ± {100 * row["folds_half_width"][f]:.1f}'
                       for f in range(4))
    assert (f'| ResNet-50 | 1 | {folds} | {100 * row["mIoU"]:.1f} ± {100 * row["mIoU_half_width"]:.1f} '
            '| — |') in text
    with open(os.path.join(out, 'table.json')) as f:
        assert json.load(f)['missing'] == []


def test_cells_of_a_single_episode_per_class_show_no_interval(bench, capsys):
    exp, opts = bench
    (row,) = run(exp, opts, '--episodes', '4', '--folds', '0')     # 5 classes: 1 or 0 each
    (seed_line,) = [line for line in capsys.readouterr().err.splitlines()
                    if 'INFO] seed 321: ' in line]
    assert seed_line.endswith('(no interval: every class has a single episode, which a bootstrap '
                              'within classes cannot resample)')
    assert row['folds_half_width'] == {0: None} and row['mIoU_half_width'] is None
    with open(os.path.join(exp, 'reproduce', 'table.md')) as f:
        text = f.read()
    assert f'| ResNet-50 | 1 | {100 * row["folds"][0]:.1f} | — | — | — |' in text
    assert 'No ±: no interval, every class of a cell had a single episode' in text


def test_finished_cells_are_kept_and_changed_ones_recomputed(bench, monkeypatch, capsys):
    exp, opts = bench
    run(exp, opts)                                  # everything done (or kept) once
    capsys.readouterr()
    tested = []
    real = reproduce.evaluate_checkpoint
    monkeypatch.setattr(reproduce, 'evaluate_checkpoint',
                        lambda cfg, env, weight, seeds, *args, **kw: tested.append(seeds) or
                        real(cfg, env, weight, seeds, *args, **kw))
    run(exp, opts)
    out = capsys.readouterr().out
    assert tested == [] and out.count(': kept from ') == 4 and '0 tested now, 4 kept' in out
    run(exp, opts, '--seeds', '321', '7', '--folds', '0')    # another request: tested again
    assert tested == [[321, 7]]


def test_missing_checkpoints_are_listed_not_fatal(bench, tmp_path):
    exp, opts = bench
    partial = str(tmp_path / 'exp')
    shutil.copytree(exp, partial, ignore=shutil.ignore_patterns('reproduce'))
    shutil.rmtree(os.path.join(partial, 'pascal', 'SCCAN', 'split3'))
    (row,) = run(partial, opts)
    assert sorted(row['folds']) == [0, 1, 2] and row['mIoU'] is None
    with open(os.path.join(partial, 'reproduce', 'table.md')) as f:
        text = f.read()
    assert '- synthetic_split3_resnet50_1shot: no checkpoint in' in text and '| — | — |' in text


def test_the_best_checkpoint_of_the_shot_is_picked(tmp_path):
    cfg = load_config(reproduce.config_path(os.path.join(REPO_ROOT, 'config'), 'pascal', 0, 50, 1),
                      ['exp_dir', str(tmp_path), 'weight', 'None'])
    paths = RunPaths.of(cfg)
    snapshot = paths.snapshot
    os.makedirs(snapshot)
    for name in ('train_epoch_10_0.6000.pth', 'win8_train_epoch_43_0.6753.pth', 'train_latest.pth',
                 'train5_epoch_20_0.7100.pth', 'train_epoch_12.5_0.6500.pth'):
        open(os.path.join(snapshot, name), 'w').close()
    assert os.path.basename(reproduce.find_best(cfg, paths)) == 'win8_train_epoch_43_0.6753.pth'
    five = cfg.replace(shot=5)
    assert os.path.basename(reproduce.find_best(five, RunPaths.of(five))) == 'train5_epoch_20_0.7100.pth'
    named = cfg.replace(weight='train_epoch_10_0.6000.pth')      # the config's weight wins
    assert os.path.basename(reproduce.find_best(named, paths)) == 'train_epoch_10_0.6000.pth'
    assert reproduce.find_best(cfg, RunPaths(str(tmp_path / 'none'), 1)) is None
    for name in os.listdir(snapshot):
        if 'epoch' in name and not name.startswith('train5'):
            os.remove(os.path.join(snapshot, name))
    assert os.path.basename(reproduce.find_best(cfg, paths)) == 'train_latest.pth'   # never validated


# ---- what it is asked wrongly: one line, nothing written ----

def test_a_missing_exp_root_or_config_dir_is_one_line_and_writes_nothing(bench, tmp_path, capsys):
    from helpers import assert_one_error, run_cli
    exp, opts = bench
    missing = str(tmp_path / 'no_exp')
    status, _, err = run_cli(reproduce.main, ['--exp', missing, '--opts', *opts], capsys)
    assert_one_error(status, err, f'--exp {missing}: folder not found')
    assert not os.path.exists(missing)                       # not made, no empty table in it
    table = os.path.join(exp, 'reproduce', 'table.md')
    os.makedirs(os.path.dirname(table), exist_ok=True)
    with open(table, 'w') as f:
        f.write('an earlier table')
    status, _, err = run_cli(reproduce.main, ['--exp', exp, '--config-dir', str(tmp_path / 'none'),
                                              '--opts', *opts], capsys)
    assert_one_error(status, err, f'--config-dir {tmp_path / "none"}: folder not found')
    (tmp_path / 'configs').mkdir()
    status, _, err = run_cli(reproduce.main, ['--exp', exp, '--config-dir', str(tmp_path / 'configs'),
                                              '--benchmarks', 'synthetic', '--opts', *opts], capsys)
    assert_one_error(status, err, f'--config-dir {tmp_path / "configs"} holds no config of the '
                                  'cells asked (e.g. ')
    status, _, err = run_cli(reproduce.main, ['--exp', str(tmp_path), '--benchmarks', 'synthetic',
                                              '--opts', *opts], capsys)
    assert_one_error(status, err, f'--exp {tmp_path}: none of the 4 cells asked has a checkpoint')
    with open(table) as f:
        assert f.read() == 'an earlier table'


@pytest.mark.parametrize('argv, needles', [
    (['--episodes', '0'], ['argument --episodes: expected a positive integer, got \'0\'']),
    (['--seeds', 'x'], ['argument --seeds: expected an integer >= 0, got \'x\'']),
    (['--folds', '5'], ['argument --folds: invalid choice: 5']),
    (['--layers', 'fifty'], ['argument --layers: invalid int value: \'fifty\'']),
    (['--feature-cache-gb', 'lots'], ["argument --feature-cache-gb: expected 'auto' or a number of "
                                      "GB >= 0, got 'lots'"])])
def test_bad_options_are_one_line(tmp_path, capsys, argv, needles):
    from helpers import assert_one_error, run_cli
    status, _, err = run_cli(reproduce.main, ['--exp', str(tmp_path), *argv], capsys)
    assert_one_error(status, err, *needles)


def test_help_says_what_it_does_in_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert ("The paper's Tables 1-2 in one command: test every checkpoint of an experiment root "
            "with the authors' protocol and print the table beside the paper's numbers; and the "
            "cross-domain table.") in text
