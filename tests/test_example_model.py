"""The model shipped in examples/: it segments its example for real (predict_sccan.py, the Python
API, the app's example button with its default checkpoint), its card states its file, and
tools/dev/make_example_model.py refuses to replace it unasked."""
import hashlib
import os
import re

import cv2
import numpy as np
import pytest

import predict_sccan
from helpers import assert_one_error, files_below, run_cli
from model.build import MODEL_VARIANTS
from model.checkpoint import read_checkpoint
from tools import app as app_tool
from tools.dev import make_example_model as maker
from util.config import REPO_ROOT
from util.files.image_io import IGNORE_LABEL, read_label
from util.prediction.app import EXAMPLE_CLASS, SegmentationApp, SupportSlot
from util.prediction.predictor import FewShotSegmenter

EXAMPLES = os.path.join(REPO_ROOT, 'examples')
MODEL = os.path.join(EXAMPLES, maker.MODEL)
QUERIES = [os.path.join(EXAMPLES, f'query{k}.jpg') for k in (1, 2)]
MIN_IOU = 0.4           # each query's IoU with its ground truth, at least (the shipped model: 0.53, 0.96)


def example(name):
    return os.path.join(EXAMPLES, name)


def iou(mask, label_path):
    """Foreground IoU of a 0/1 mask with the example class in a label map (255 not counted)."""
    label = read_label(label_path)
    valid = label != IGNORE_LABEL
    truth, predicted = (label == EXAMPLE_CLASS) & valid, (mask > 0) & valid
    return (truth & predicted).sum() / (truth | predicted).sum()


def test_the_shipped_model_is_the_tiny_variant_in_a_portable_file():
    assert os.path.getsize(MODEL) < 1_000_000
    checkpoint = read_checkpoint(MODEL)
    assert checkpoint['architecture'] == MODEL_VARIANTS['tiny'] and checkpoint['shot'] == 1
    assert sorted(checkpoint) == ['architecture', 'config', 'shot', 'state_dict']     # nothing to resume
    config = checkpoint['config']
    assert (config['val_size'], config['split'], config['data_set']) == (161, 0, 'pascal')
    paths = [v for v in config.values() if isinstance(v, str) and os.sep in v]
    assert paths and not any(os.path.isabs(p) for p in paths)      # the same bytes in any clone


def test_the_shipped_model_segments_its_example():
    """The Python API on the example: each query's mask overlaps the novel class it shows, as
    much as the card says."""
    assert FewShotSegmenter.from_checkpoint(MODEL, device='cpu').val_size == 161
    ious = maker.example_ious(MODEL, EXAMPLES)
    assert min(ious.values()) >= MIN_IOU
    with open(example('README.md'), encoding='utf-8') as f:
        card = ' '.join(f.read().split())
    assert (f'IoU of {ious["query1"]:.2f} in `query1.jpg` and {ious["query2"]:.2f} in '
            '`query2.jpg`') in card


def test_the_card_states_the_file_and_what_it_knows():
    with open(example('README.md'), encoding='utf-8') as f:
        card = f.read()
    with open(MODEL, 'rb') as f:
        data = f.read()
    assert f'SHA-256 `{hashlib.sha256(data).hexdigest()}`' in card
    assert f'({len(data):,} bytes' in card
    assert 'only the synthetic benchmark\'s shapes and colours' in card
    assert re.search(r'\| mIoU \(mean over the 5 classes\) \| \d+\.\d \(\d+\.\d to \d+\.\d\) \|', card)


def test_the_example_is_the_benchmark_layout_the_app_reads(tmp_path):
    """The app's example button with its default --data: support 1 and its mask are the files
    predict_sccan.py is shown with, the queries are query1 and query2."""
    assert os.path.samefile(app_tool.parse_args([]).data, EXAMPLES)
    support, mask, queries = SegmentationApp(str(tmp_path)).synthetic_example(EXAMPLES)
    with open(support, 'rb') as a, open(example('support.jpg'), 'rb') as b:
        assert a.read() == b.read()
    np.testing.assert_array_equal(cv2.imread(mask, 0), cv2.imread(example('support_mask.png'), 0))
    assert [os.path.basename(q) for q in queries] == ['query1.jpg', 'query2.jpg']


def test_the_app_segments_its_example_with_the_default_checkpoint(tmp_path):
    """On a fresh clone (no run under exp/) the checkpoint chosen is the shipped model, and Run on
    the example segments both queries, each overlapping its object."""
    (label, checkpoint), = app_tool.checkpoint_choices(str(tmp_path / 'exp'))
    assert os.path.samefile(checkpoint, MODEL) and 'knows only the synthetic shapes' in label
    app = SegmentationApp(str(tmp_path / 'app'), device='cpu')
    support, mask, queries = app.synthetic_example(app_tool.parse_args([]).data)
    result = app.run(checkpoint, [SupportSlot(image=support, mask=mask)], queries)
    assert result.messages.startswith('2 queries segmented'), result.messages
    masks = [path for path in result.downloads if path.endswith('_mask.png')]
    assert len(masks) == 2
    for path, query in zip(masks, QUERIES):
        assert iou(cv2.imread(path, 0), query.replace('.jpg', '_label.png')) >= MIN_IOU


def test_predict_sccan_segments_the_example(tmp_path, capsys):
    out = tmp_path / 'predictions'
    status, stdout, err = run_cli(predict_sccan.main, ['--weight', MODEL, '--support', example('support.jpg'),
                                                       example('support_mask.png'), '--query', *QUERIES,
                                                       '--out', str(out), '--device', 'cpu'], capsys)
    assert status == 0, err
    for query in QUERIES:
        name = os.path.basename(query)[:-len('.jpg')]
        assert f'{query}: foreground ' in stdout
        assert iou(cv2.imread(str(out / f'{name}_mask.png'), 0),
                   query.replace('.jpg', '_label.png')) >= MIN_IOU


def test_the_maker_refuses_to_replace_the_shipped_files_unasked(tmp_path, capsys):
    out = tmp_path / 'examples'
    out.mkdir()
    (out / maker.MODEL).write_bytes(b'an earlier model')
    before = files_below(out)
    status, _, err = run_cli(maker.main, ['--out', str(out), '--root', str(tmp_path / 'data')], capsys)
    assert_one_error(status, err, f'{out / maker.MODEL} exists already; pass --overwrite')
    assert files_below(out) == before and not (tmp_path / 'data').exists()     # before any work


@pytest.mark.parametrize('config, expected', [
    ({'data_root': os.path.join(REPO_ROOT, 'data', 'synthetic'), 'split': 0, 'weight': None},
     {'data_root': os.path.join('data', 'synthetic'), 'split': 0, 'weight': None}),
])
def test_the_stored_config_is_relative_to_the_repository(config, expected):
    assert maker.portable(config) == expected
