"""The cross-domain benchmarks through the scripts (tiny model, tiny trees): training on every
PASCAL class (split 4), test_sccan.py on each benchmark at 1 and 5 shots with that checkpoint,
and meta-training and meta-testing on one's own classes."""
import glob
import json
import os
import shutil

import pytest

import test_sccan
import train_sccan
from tools import make_cross_domain_trees as trees
from tools import reproduce
from helpers import assert_one_error, files_below, make_pascal, run_cli, without_timings
from util.config import REPO_ROOT, load_config
from util.files.run_paths import RunPaths

TINY = ['model', 'tiny', 'backbone_weights', 'None', 'train_h', '33', 'train_w', '33',
        'val_size', '33', 'batch_size', '2', 'workers', '0', 'print_freq', '1']
BENCHMARKS = trees.TREES


def config(*parts):
    return os.path.join(REPO_ROOT, 'config', *parts)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    return trees.write_trees(str(tmp_path_factory.mktemp('trees')), seed=0)


@pytest.fixture(scope='module')
def all_classes_checkpoints(tmp_path_factory):
    """train_sccan.py with split 4 (every PASCAL class) on the synthetic benchmark, one step at
    1 and at 5 shots: the checkpoints the cross-domain configs test."""
    tmp = tmp_path_factory.mktemp('all_classes')
    root, train, _ = make_pascal(tmp / 'data', n_train=80, n_val=0)
    opts = TINY + ['data_root', root, 'train_list', train, 'list_dir', str(tmp / 'lists'),
                   'max_iters', '1', 'exp_dir', str(tmp / 'exp')]
    paths = {}
    for shot, name in ((1, 'pascal_all_resnet50.yaml'), (5, 'pascal_all_resnet50_5s.yaml')):
        train_sccan.main(['--config', config('pascal', name), '--opts', *opts])
        paths[shot] = latest_checkpoint(load_config(config('pascal', name), opts))
    return paths


def latest_checkpoint(cfg):
    return RunPaths.of(cfg).latest


@pytest.mark.parametrize('shot', (1, 5))
@pytest.mark.parametrize('benchmark', list(BENCHMARKS))
def test_each_benchmark_tests_a_pascal_checkpoint(tree, all_classes_checkpoints, benchmark, shot,
                                                  tmp_path):
    """No --any-split: a model meta-trained on PASCAL is what these benchmarks test."""
    name = f'{benchmark}_resnet50{"" if shot == 1 else "_5s"}.yaml'
    assert test_sccan.main(['--config', config('cross_domain', name), '--weight',
                            all_classes_checkpoints[shot], '--episodes', '3', '--seeds', '1',
                            '--opts', *TINY, 'data_root', tree[BENCHMARKS[benchmark]],
                            'val_list', tree['fss_classes']]) == 0
    expected = (f'{os.path.splitext(all_classes_checkpoints[shot])[0]}_test_{benchmark}_{shot}shot_'
                f'3ep_seed1.json')
    with open(expected) as f:
        report = json.load(f)
    assert (report['data_set'], report['shot'], report['episodes']) == (benchmark, shot, 3)
    assert [sum(seed['class_episodes']) for seed in report['seeds']] == [3]
    assert report['seeds'][0]['class_ids'] == {'fss': [760, 761, 999], 'deepglobe': list(range(6)),
                                               'isic': [0, 1, 2], 'lung': [0]}[benchmark]
    os.remove(expected)


@pytest.mark.parametrize('benchmark', list(BENCHMARKS))
def test_the_report_never_replaces_a_mask_of_the_benchmark(tree, all_classes_checkpoints,
                                                          benchmark, capsys):
    """A benchmark's images and masks are inputs: --out naming one is refused, --overwrite or
    not, before anything is written."""
    root = tree[BENCHMARKS[benchmark]]
    mask = sorted(glob.glob(os.path.join(root, '**', '*.png'), recursive=True))[0]
    before = files_below(root)
    status, _, err = run_cli(test_sccan.main, [
        '--config', config('cross_domain', f'{benchmark}_resnet50.yaml'), '--weight',
        all_classes_checkpoints[1], '--episodes', '2', '--out', mask, '--overwrite', '--opts',
        *TINY, 'data_root', root, 'val_list', tree['fss_classes']], capsys)
    assert_one_error(status, err, f'output {mask} would overwrite the input')
    assert files_below(root) == before


@pytest.mark.parametrize('benchmark', ['fss', 'deepglobe'])
def test_a_saved_manifest_replays_to_the_same_report(tree, all_classes_checkpoints, benchmark,
                                                     tmp_path):
    """--save-episodes then --episodes-from on a cross-domain benchmark: PATNet's episodes of
    the seeds, replayed, score the same, pixel for pixel."""
    name = f'{benchmark}_resnet50.yaml'

    def run(out, *extra):
        assert test_sccan.main(['--config', config('cross_domain', name), '--weight',
                                all_classes_checkpoints[1], '--out', str(out), *extra, '--opts',
                                *TINY, 'data_root', tree[BENCHMARKS[benchmark]],
                                'val_list', tree['fss_classes']]) == 0
        with open(out) as f:
            return json.load(f)

    first = run(tmp_path / 'a.json', '--seeds', '0', '1', '--episodes', '4', '--save-episodes',
                str(tmp_path / 'a.jsonl'))
    replay = run(tmp_path / 'b.json', '--episodes-from', str(tmp_path / 'a.jsonl'))
    assert ([without_timings(seed) for seed in replay['seeds']]
            == [without_timings(seed) for seed in first['seeds']])
    assert replay['uncertainty'] == first['uncertainty']
    with open(tmp_path / 'a.jsonl') as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 1 + 2 * 4          # a header, then the 4 episodes of each seed


def test_an_empty_benchmark_folder_is_a_one_line_error(all_classes_checkpoints, tmp_path, capsys):
    (tmp_path / 'Deepglobe').mkdir()
    status, _, err = run_cli(test_sccan.main, [
        '--config', config('cross_domain', 'deepglobe_resnet50.yaml'), '--weight',
        all_classes_checkpoints[1], '--out', str(tmp_path / 'r.json'), '--opts', *TINY,
        'data_root', str(tmp_path / 'Deepglobe')], capsys)
    assert_one_error(status, err, f'{tmp_path}/Deepglobe/1/test/origin: 0 images, fewer than '
                                  'shot + 1 = 2')


def test_own_classes_meta_train_and_meta_test(tree, tmp_path):
    (tmp_path / 'train.txt').write_text("abe's_flyingfish\naccordion\nac_wall\n")
    (tmp_path / 'test.txt').write_text('wooden_spoon\n')
    opts = TINY + ['data_root', tree['FSS-1000'], 'train_list', str(tmp_path / 'train.txt'),
                   'val_list', str(tmp_path / 'test.txt'), 'max_iters', '2', 'test_num', '3',
                   'exp_dir', str(tmp_path / 'exp')]
    train_sccan.main(['--config', config('folder', 'folder_resnet50.yaml'), '--opts', *opts])
    snapshot = RunPaths.of(load_config(config('folder', 'folder_resnet50.yaml'), opts)).snapshot
    (best,) = glob.glob(os.path.join(snapshot, 'train_epoch_*.pth'))    # validated once
    score = float(os.path.splitext(best)[0].rsplit('_', 1)[1])
    out = str(tmp_path / 'report.json')
    test_sccan.main(['--config', config('folder', 'folder_resnet50.yaml'), '--weight', best,
                     '--out', out, '--opts', *opts])
    with open(out) as f:
        report = json.load(f)
    assert report['seeds'][0]['class_ids'] == [0] and report['episodes'] == 3
    assert report['mean']['mIoU'] == pytest.approx(score, abs=1e-4)     # the validation's


def test_reproduce_writes_the_cross_domain_table(tree, all_classes_checkpoints, tmp_path):
    """tools/reproduce.py: the four targets tested with the all-classes PASCAL checkpoint found
    under --exp, over two seeds, and their mean (7 episodes: Deepglobe's 6 classes have an
    interval only with a class of two episodes)."""
    configs = tmp_path / 'config'
    for folder in ('cross_domain', 'pascal'):
        (configs / folder).mkdir(parents=True)
    for target, folder in BENCHMARKS.items():
        with open(config('cross_domain', f'{target}_resnet50.yaml')) as f:
            text = f.read().replace(f'../data/CDFSL/{folder}', tree[folder])
        (configs / 'cross_domain' / f'{target}_resnet50.yaml').write_text(text)
    for name in ('pascal_all_resnet50.yaml', 'pascal_split0_resnet50.yaml'):     # and its base
        shutil.copy(config('pascal', name), configs / 'pascal')
    # where train_sccan.py --opts model tiny puts the all-classes run: resnet14/
    snapshot = tmp_path / 'exp' / 'pascal' / 'SCCAN' / 'split4' / 'resnet14' / 'snapshot'
    snapshot.mkdir(parents=True)
    shutil.copy(all_classes_checkpoints[1], snapshot / 'train_latest.pth')
    (row,) = reproduce.main(['--exp', str(tmp_path / 'exp'), '--benchmarks', 'cross_domain',
                             '--layers', '50', '--shots', '1', '--seeds', '0', '1', '--episodes',
                             '7', '--feature-cache-gb', '0', '--config-dir', str(configs),
                             '--opts', *TINY, 'val_list', tree['fss_classes']])
    assert sorted(row['folds']) == sorted(BENCHMARKS)
    assert row['mIoU'] == pytest.approx(sum(row['folds'].values()) / 4)
    cells = tmp_path / 'exp' / 'reproduce' / 'cells'
    with open(cells / 'cross_domain_isic_resnet50_1shot.report.json') as f:
        report = json.load(f)
    assert [s['seed'] for s in report['seeds']] == [0, 1] and report['data_set'] == 'isic'
    assert report['mean']['mIoU'] == row['folds']['isic']
    with open(tmp_path / 'exp' / 'reproduce' / 'table.md') as f:
        text = f.read()
    halves = row['folds_half_width']
    assert row['mIoU_half_width'] == pytest.approx(
        sum(h * h for h in halves.values()) ** 0.5 / 4)    # the four targets are independent runs
    percents = ' | '.join(f'{100 * row["folds"][t]:.1f} ± {100 * halves[t]:.1f}'
                          for t in ('deepglobe', 'isic', 'lung', 'fss'))
    assert '| backbone | shot | Deepglobe | ISIC | Chest X-ray | FSS-1000 | mIoU |' in text
    assert (f'| ResNet-50 | 1 | {percents} | {100 * row["mIoU"]:.1f} ± '
            f'{100 * row["mIoU_half_width"]:.1f} | — |') in text
