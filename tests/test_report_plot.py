"""test_sccan.py --plot: the report drawn (where matplotlib is installed), a one-line hint where it
is not, and the paper's figure only where the paper has one."""
import os
import sys

import cv2
import numpy as np
import pytest

from helpers import assert_one_error, files_below, run_cli
from util.config import REPO_ROOT, load_config
from util.evaluation.paper import paper_figure
from util.evaluation.report_plot import HINT, plot_report

import test_sccan



def red_pixels(image):
    """Pixels of the paper's red line (#c53030, anti-aliased); nothing else drawn is red."""
    b, g, r = image[..., 0].astype(int), image[..., 1].astype(int), image[..., 2].astype(int)
    return int(((r > 150) & (g < 120) & (b < 120)).sum())


def report(seeds=2):
    """A test report as test_sccan.py writes it, the fields the picture reads."""
    rng = np.random.default_rng(0)
    per_seed = [{'seed': s, 'mIoU': 0.6 + 0.01 * s, 'class_IoU': list(rng.uniform(0.4, 0.8, 5)),
                 'class_ids': [1, 2, 3, 4, 5]} for s in range(seeds)]
    return {'data_set': 'pascal', 'split': 0, 'shot': 1, 'episodes': 1000, 'seeds': per_seed,
            'mean': {'mIoU': 0.605},
            'uncertainty': {'pooled': {'mIoU': [0.59, 0.62],
                                       'class_IoU': [[0.3, 0.9]] * 5}}}


def test_the_picture_shows_the_paper_line_only_when_given(tmp_path):
    pytest.importorskip('matplotlib', reason='matplotlib (an optional extra) is not installed')
    with_paper = plot_report(report(), str(tmp_path / 'a.png'), 68.3, '(SCCAN, ICCV 2023, Table 1)')
    without = plot_report(report(), str(tmp_path / 'b.png'))
    a, b = cv2.imread(with_paper), cv2.imread(without)
    assert a.shape == b.shape and a.shape[2] == 3 and a.shape[0] == int(4.2 * 120)
    assert red_pixels(a) > 200 and red_pixels(b) == 0


def test_a_report_without_intervals_draws_none(tmp_path, monkeypatch):
    """One episode per class: no error bars and 'no interval' in the title, not [x, x]."""
    pytest.importorskip('matplotlib', reason='matplotlib (an optional extra) is not installed')
    import matplotlib.axes
    drawn = []
    for name in ('errorbar', 'set_title'):
        real = getattr(matplotlib.axes.Axes, name)
        monkeypatch.setattr(matplotlib.axes.Axes, name, lambda self, *a, real=real, name=name, **k:
                            drawn.append((name, a)) or real(self, *a, **k))
    single = report(1)
    single['uncertainty']['pooled'].update(mIoU=[0.6, 0.6], estimable=False)
    plot_report(single, str(tmp_path / 'a.png'))
    assert [name for name, _ in drawn] == ['set_title']
    assert drawn[0][1][0].endswith('mIoU 60.5 (no interval: a single episode per class)')
    drawn.clear()
    plot_report(report(), str(tmp_path / 'b.png'))
    assert [name for name, _ in drawn] == ['errorbar', 'set_title']


def test_a_benchmark_without_folds_is_drawn_with_its_class_names(tmp_path, monkeypatch):
    pytest.importorskip('matplotlib', reason='matplotlib (an optional extra) is not installed')
    from matplotlib.axes import Axes
    drawn = {}
    for method in ('set_title', 'set_xticks', 'set_xlabel'):
        original = getattr(Axes, method)

        def record(self, *args, method=method, original=original, **kwargs):
            drawn[method] = args
            return original(self, *args, **kwargs)
        monkeypatch.setattr(Axes, method, record)
    isic = report()
    isic['data_set'] = 'isic'
    for seed in isic['seeds']:
        seed.update(class_ids=[0, 1, 2, 3, 4], class_names=['a', 'b', 'c', 'd', 'e'])
    plot_report(isic, str(tmp_path / 'isic.png'))
    assert drawn['set_title'][0].startswith('isic, 1-shot: 1000 episodes')
    assert list(drawn['set_xticks'][1]) == ['a', 'b', 'c', 'd', 'e', 'mIoU']
    assert drawn['set_xlabel'] == ('class',)


def test_without_matplotlib_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)        # import matplotlib fails
    argv = ['--config', os.path.join(REPO_ROOT, 'config', 'synthetic', 'synthetic_split0_resnet50.yaml'),
            '--weight', str(tmp_path / 'absent.pth'), '--out', str(tmp_path / 'r.json'),
            '--plot', str(tmp_path / 'r.png')]
    status, _, err = run_cli(test_sccan.main, argv, capsys)
    assert_one_error(status, err, HINT)
    assert files_below(str(tmp_path)) == {}


@pytest.mark.parametrize('config, opts, expected', [
    ('pascal/pascal_split0_resnet50.yaml', [], (68.3, '(SCCAN, ICCV 2023, Table 1)')),
    ('coco/coco_split3_resnet101.yaml', [], (48.8, '(SCCAN, ICCV 2023, Table 2)')),
    ('pascal/pascal_split1_resnet101_5s.yaml', [], (None, '')),      # the paper gives the mean only
    ('pascal/pascal_split0_resnet50.yaml', ['model', 'tiny'], (None, '')),     # another backbone
    ('synthetic/synthetic_split0_resnet50.yaml', [], (None, '')),    # read as 'pascal', not PASCAL
])
def test_the_paper_figure_of_a_config(config, opts, expected):
    assert paper_figure(load_config(os.path.join(REPO_ROOT, 'config', config), opts)) == expected
