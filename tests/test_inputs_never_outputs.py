"""No output over an input, ever: every file a run reads (lists, images, labels, list caches,
checkpoints, configs, manifests) is refused as an output of any tool, --overwrite or not, and
left as it was."""
import os

import pytest

from helpers import assert_one_error, files_below, make_pascal_config, run_cli
from util.config import load_config
from util.datasets import episode_dataset
from util.files.checks import InputFiles, check_outputs

from tools import check_data  # noqa: E402
from tools import prepare_coco  # noqa: E402
import test_sccan  # noqa: E402


TEST_OPTS = ['model', 'tiny', 'val_size', '57', 'workers', '0', 'batch_size_val', '2',
             'test_num', '2']


@pytest.fixture
def tiny_data(tmp_path):
    """A tiny PASCAL tree, a config naming it (lists cached in tmp_path/lists) and its val data
    set's inputs."""
    config = make_pascal_config(str(tmp_path), n_train=20, n_val=10)
    cfg = load_config(config)
    return {'config': config, 'cfg': cfg, 'root': cfg.data_root,
            'inputs': episode_dataset(cfg, 'val').input_files()}


def test_every_file_a_data_set_reads_is_an_input(tiny_data, tmp_path):
    root, cfg = tiny_data['root'], tiny_data['cfg']
    (tmp_path / 'linked').symlink_to(root)
    cache = os.path.join(cfg.list_dir, 'pascal', 'class_pixels')
    listed = ['val.txt', 'JPEGImages/2008_000021.jpg', 'SegmentationClassAug/2008_000021.png']
    spellings = [os.path.join(root, name) for name in listed] + [
        os.path.join(cache, os.listdir(cache)[0]),                    # the list's scan cache
        str(tmp_path / 'linked' / 'SegmentationClassAug' / '2008_000022.png'),   # through a link
        os.path.join(root, 'JPEGImages', '..', 'val.txt')]
    for output in spellings:
        with pytest.raises(ValueError, match=f'output {output} would overwrite the input '):
            check_outputs([output], tiny_data['inputs'], overwrite=True)
    # the train list's files are not the val data set's; a new file is no input
    check_outputs([os.path.join(root, 'train.txt'), str(tmp_path / 'report.json')],
                  tiny_data['inputs'], overwrite=True)


def test_a_file_linked_under_another_name_is_found_when_named_one_by_one(tmp_path):
    config = tmp_path / 'config.yaml'
    config.write_text('')
    (tmp_path / 'my.yaml').symlink_to(config)
    assert InputFiles([tmp_path / 'my.yaml']).find(str(config)) == str(tmp_path / 'my.yaml')
    assert InputFiles([config]).find(str(tmp_path / 'my.yaml')) == str(config)


def test_check_data_never_writes_its_report_over_a_list_it_checks(tiny_data, capsys):
    val_list = tiny_data['cfg'].val_list
    before = files_below(tiny_data['root'])
    status, _, err = run_cli(check_data.main, ['--config', tiny_data['config'], '--out', val_list],
                             capsys)
    assert_one_error(status, err, f'output {val_list} would overwrite the input {val_list}')
    assert files_below(tiny_data['root']) == before


def test_prepare_coco_never_writes_its_list_over_the_order_from_list(tmp_path, capsys):
    import cv2
    import json
    import numpy as np
    root = tmp_path / 'MSCOCO2014'
    (root / 'val2014').mkdir(parents=True)
    (root / 'annotations').mkdir()
    name = 'COCO_val2014_000000000005'
    cv2.imwrite(str(root / 'val2014' / f'{name}.jpg'), np.zeros((20, 20, 3), np.uint8))
    (root / 'annotations' / 'instances_val2014.json').write_text(json.dumps({
        'images': [{'id': 5, 'file_name': f'{name}.jpg', 'height': 20, 'width': 20}],
        'categories': [{'id': 1, 'name': 'person'}],
        'annotations': [{'id': 1, 'image_id': 5, 'category_id': 1, 'iscrowd': 0, 'area': 49.0,
                         'segmentation': [[2, 2, 9, 2, 9, 9, 2, 9]], 'bbox': [2, 2, 7, 7]}]}))
    lists = tmp_path / 'lists'
    lists.mkdir()
    theirs = lists / 'val.txt'           # the authors' list, copied where ours go
    theirs.write_text(f'val2014/{name}.jpg annotations/val2014/{name}.png\n')
    status, _, err = run_cli(prepare_coco.main, ['--coco', str(root), '--sets', 'val2014',
                                                 '--lists-dir', str(lists), '--order-from',
                                                 str(theirs), '--workers', '1'], capsys)
    assert_one_error(status, err, f'output {theirs} would overwrite the input {theirs}')
    assert theirs.read_text() == f'val2014/{name}.jpg annotations/val2014/{name}.png\n'
    assert not (root / 'annotations' / 'val2014').exists()       # nothing painted


# ---- test_sccan.py: its report is never written over an input, nor by two runs at once ----

@pytest.fixture
def checkpoint(tiny_data, tmp_path):
    """A tiny checkpoint of the config's architecture (random weights)."""
    import torch
    from model.checkpoint import weights_checkpoint
    from util.experiment import ready_model
    from util.files.writer import save_checkpoint
    cfg = load_config(tiny_data['config'], TEST_OPTS)
    torch.manual_seed(0)
    path = str(tmp_path / 'tiny.pth')
    save_checkpoint(weights_checkpoint(ready_model(cfg, 'cpu'), epoch=1, shot=1, config=cfg.to_dict()),
                    path)
    return path


def run_test(tiny_data, checkpoint, capsys, *extra):
    return run_cli(test_sccan.main, ['--config', tiny_data['config'], '--weight', checkpoint,
                                     *extra, '--opts', *TEST_OPTS], capsys)


@pytest.mark.parametrize('target', ['val.txt', 'JPEGImages/2008_000021.jpg',
                                    'SegmentationClassAug/2008_000022.png', 'cache'])
def test_test_sccan_never_writes_its_report_over_a_file_of_its_data(tiny_data, checkpoint, capsys,
                                                                    target):
    if target == 'cache':
        cache = os.path.join(tiny_data['cfg'].list_dir, 'pascal', 'class_pixels')
        target = os.path.join(cache, next(f for f in os.listdir(cache) if f.startswith('val-')))
    else:
        target = os.path.join(tiny_data['root'], target)
    below = os.path.dirname(os.path.dirname(target))
    before = files_below(below)
    status, _, err = run_test(tiny_data, checkpoint, capsys, '--out', target, '--overwrite')
    assert_one_error(status, err, f'output {target} would overwrite the input {target}')
    assert files_below(below) == before


def test_a_second_run_writing_the_same_report_is_refused_while_the_first_runs(tiny_data, checkpoint,
                                                                              tmp_path, capsys,
                                                                              monkeypatch):
    """The first run claims the report when it starts and holds the claim until it has written
    it; a second run started meanwhile (here: while the first evaluates) is refused at once."""
    import util.evaluation.checkpoint_evaluation
    from util.evaluation.evaluate import run_episodes
    out = str(tmp_path / 'report.json')
    second = {}

    def evaluating(*args, **kwargs):
        if not second:         # the first run's evaluation (not the second's, if it got there)
            second['started'] = True
            second['result'] = run_test(tiny_data, checkpoint, capsys, '--out', out, '--overwrite')
        return run_episodes(*args, **kwargs)
    monkeypatch.setattr(util.evaluation.checkpoint_evaluation, 'run_episodes', evaluating)
    status, _, err = run_test(tiny_data, checkpoint, capsys, '--out', out)
    assert status == 0, err
    status, _, err = second['result']
    assert_one_error(status, err, f'the report {out} is in use by another run: process '
                                  f'{os.getpid()} ', f'(lock file {out}.lock; delete it if that '
                                  'run is over)')
    assert os.path.isfile(out) and not os.path.exists(out + '.lock')    # the claim is given back


def test_a_report_named_as_a_folder_is_refused_before_the_evaluation(tiny_data, checkpoint,
                                                                     tmp_path, capsys,
                                                                     monkeypatch):
    import util.evaluation.checkpoint_evaluation
    monkeypatch.setattr(util.evaluation.checkpoint_evaluation, 'run_episodes', None)  # not reached
    for extra in ([], ['--overwrite']):
        status, _, err = run_test(tiny_data, checkpoint, capsys, '--out', str(tmp_path), *extra)
        assert_one_error(status, err, f'cannot write {tmp_path}: it is a folder; give a file name')


def test_a_report_that_cannot_be_written_is_printed_whole(tiny_data, checkpoint, tmp_path, capsys,
                                                          monkeypatch):
    """A full disk after the evaluation: the error names the report, and its content is on
    stdout, not lost."""
    import errno
    import json
    import tempfile
    out = str(tmp_path / 'report.json')
    real_mkstemp = tempfile.mkstemp

    def full_disk(*args, prefix='', **kwargs):
        if prefix == '.report.json.':
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_mkstemp(*args, prefix=prefix, **kwargs)
    monkeypatch.setattr(tempfile, 'mkstemp', full_disk)
    status, stdout, err = run_test(tiny_data, checkpoint, capsys, '--out', out)
    assert_one_error(status, err, f'cannot write {out}: no space left on device; the report is '
                                  'printed on stdout instead')
    report = json.loads(stdout)
    assert report['episodes'] == 2 and 0 <= report['mean']['mIoU'] <= 1
    assert not os.path.exists(out)
