"""The benchmark tool's four modes run end to end at a tiny size (their timings are not asserted,
only what the figures must satisfy whatever the machine)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from model import build_sccan
from tools.dev import benchmark

from helpers import assert_one_error, make_pascal, make_pascal_config, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table(out):
    """(header, column titles line, rows split on runs of spaces) of a mode's printed table."""
    lines = out.splitlines()
    return lines[0], lines[1], [line.split() for line in lines[2:]]


def test_paths_is_the_default_mode_and_prints_a_row_per_setting_and_path(tmp_path, capsys):
    status, out, err = run_cli(benchmark.main, ['--tiny', '--settings', 'eval-5shot-cached', 'train-b2',
                                                '--json', str(tmp_path / 'b.json')], capsys)
    assert status == 0, err
    header, titles, rows = table(out)
    assert 'the tiny model' in header and 'matmul' in header and header.endswith('base: scripts')
    assert titles.split()[:4] == ['setting', 'path', 'episodes/call', 'seconds']
    assert [row[:3] for row in rows] == [['eval-5shot-cached', 'scripts', '1'],
                                         ['eval-5shot-cached', 'api', '1'],
                                         ['train-b2', 'scripts', '—'], ['train-b2', 'api', '—']]
    assert all(row[-2:] == ['1.00', '1.00'] for row in rows[0::2])      # the scripts path ÷ itself
    assert all(row[7] == row[9] == '—' for row in rows)           # GPU busy, reserved GB: CUDA only
    with open(tmp_path / 'b.json') as f:
        report = json.load(f)
    assert report['mode'] == 'paths' and report['tiny'] and report['header'] == header
    assert [(r['setting'], r['path']) for r in report['rows']] == [tuple(row[:2]) for row in rows]
    for r in report['rows']:
        assert r['peak_gb'] > 0 and 'error' not in r and r['busy_fraction'] is None
        assert r['tflops'] == pytest.approx(r['gflop'] / r['seconds'] / 1e3)
        assert r['matmul_ratio'] == pytest.approx(r['tflops'] / report['matmul_bf16_tflops'])
    # the model's work, counted once per setting: the same for both paths
    assert len({(r['setting'], r['gflop']) for r in report['rows']}) == 2


def test_the_models_flops_are_counted_on_the_meta_device_as_on_data():
    """model_gflop counts without data what a real forward on the CPU counts."""
    args = benchmark.parse_args(['--tiny'])[0]
    torch.manual_seed(0)
    run = benchmark.plain_step(build_sccan('tiny'), 'eval',
                               benchmark.episode(1, 5, args.size, torch.device('cpu')))
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    assert benchmark.model_gflop(args, 'eval-5shot') == counter.get_total_flops() / 1e9 > 0


def test_busy_time_is_the_union_of_the_kernels_intervals():
    assert benchmark.covered([(5, 9), (0, 2), (1, 3), (8, 10), (12, 13)]) == 3 + 5 + 1
    assert benchmark.covered([]) == 0
    assert benchmark.gpu_profile(lambda: None, torch.device('cpu')) == {'busy_fraction': None}


def test_the_top_kernels_are_those_taking_the_most_time_per_call():
    long_name = 'void gemm<' + 'x' * 200 + '>'
    timings = [('elementwise', 10.0)] * 30 + [(long_name, 500.0)] * 3 + [('copy', 40.0)] * 6 + [('tiny', 1.0)]
    top = benchmark.top_kernels(timings, calls=3, top=3)      # µs over 3 calls → ms per call
    assert top == [{'kernel': long_name[:benchmark.KERNEL_NAME_CHARS], 'launches': 1.0, 'ms': 0.5},
                   {'kernel': 'elementwise', 'launches': 10.0, 'ms': pytest.approx(0.1)},
                   {'kernel': 'copy', 'launches': 2.0, 'ms': pytest.approx(0.08)}]


def test_peak_memory_is_the_measuring_process_own():
    """A child started from a process with a large peak reports its own (ru_maxrss would carry
    the parent's over fork and exec)."""
    ballast = bytearray(1024 ** 3)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = ('import torch; from tools.dev.benchmark import peak_memory; '
            'print(peak_memory(torch.device("cpu"))["peak_gb"])')
    child = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    del ballast
    assert child.returncode == 0, child.stderr
    assert float(child.stdout) < 0.8


@pytest.mark.parametrize('argv, message', [
    (['--size', '100'], 'error: --size 100: expected (size - 1) % 8 == 0, e.g. 473, 233, 57'),
    (['paths', '--tiny', '--reference'], 'error: --reference compares the full model: drop --tiny'),
    (['modes', '--modes', 'fast'], "error: argument --modes: invalid choice: 'fast'"),
])
def test_bad_arguments_are_one_error_line(capsys, argv, message):
    status, _, err = run_cli(benchmark.main, argv, capsys)
    assert_one_error(status, err, message)


def test_modes_prints_a_row_per_mode_against_the_default(tmp_path, capsys):
    status, out, err = run_cli(benchmark.main, ['modes', '--tiny', '--device', 'cpu',
                                                '--modes', 'fused_attention', 'bf16', 'fp16',
                                                '--json', str(tmp_path / 'm.json')], capsys)
    assert status == 0, err
    header, _, rows = table(out)
    assert 'golden episodes: skipped (--tiny)' in header
    assert [row[0] for row in rows] == ['default', 'fused_attention', 'bf16']   # fp16: CUDA only
    assert rows[0][2] == '1.00' and rows[0][4] == '1.00'                      # default ÷ itself
    with open(tmp_path / 'm.json') as f:
        report = json.load(f)
    for row in report['rows']:
        assert row['eval_ratio'] == pytest.approx(row['eval_seconds'] / report['rows'][0]['eval_seconds'])
        assert row['eval_first_seconds'] > 0 and row['train_first_seconds'] > 0   # the warm-up call


def test_cache_cuts_backbone_passes_and_changes_no_metric(tmp_path, capsys):
    config = make_pascal_config(str(tmp_path))
    status, out, err = run_cli(benchmark.main, ['cache', '--config', config, '--shot', '5',
                                                '--episodes', '12', '--device', 'cpu', '--opts',
                                                'model', 'tiny', 'val_size', '57', 'workers', '0'], capsys)
    assert status == 0, err
    _, _, rows = table(out)
    plain, cached = rows
    assert plain[:2] == ['plain', '6.00']            # query + 5 supports per episode
    assert cached[0] == 'cached' and float(cached[1]) < 6.0      # images recur across episodes
    assert float(plain[3]) == 1.0 and float(cached[5]) < 1e-4


def test_data_measures_each_mode_and_shot(tmp_path, capsys):
    root, _, val_list = make_pascal(str(tmp_path))
    status, out, err = run_cli(benchmark.main, ['data', '--episodes', '2', '--size', '57',
                                                '--data-root', root,
                                                '--list', val_list, '--list-dir', str(tmp_path / 'lists'),
                                                '--json', str(tmp_path / 'd.json')], capsys)
    assert status == 0, err
    _, _, rows = table(out)
    assert [row[:3] for row in rows] == [['train', '1', '57'], ['train', '5', '57'], ['val', '1', '57'],
                                         ['val', '5', '57']]
    with open(tmp_path / 'd.json') as f:
        report = json.load(f)
    for row in report['rows']:       # a query and its supports per episode
        assert row['images_per_second'] == pytest.approx(row['episodes_per_second'] * (row['shot'] + 1))
