"""The benchmark tools run end to end at a tiny size (their timings are not asserted)."""
import json
import os
import subprocess
import sys

from helpers import make_pascal_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_benchmark_prints_a_row_per_setting_and_path(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'), '--tiny',
                          '--settings', 'eval-5shot-cached', 'train-b2', '--json', str(tmp_path / 'b.json')],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 'matmul' in lines[0] and lines[0].endswith('base: scripts')
    assert lines[1].split()[:3] == ['setting', 'path', 'seconds']
    rows = [line.split() for line in lines[2:]]
    assert [row[:2] for row in rows] == [['eval-5shot-cached', 'scripts'], ['eval-5shot-cached', 'api'],
                                         ['train-b2', 'scripts'], ['train-b2', 'api']]
    assert all(row[-2] == '1.00' for row in rows[0::2])          # the scripts path ÷ itself
    with open(tmp_path / 'b.json') as f:
        report = json.load(f)
    assert [(r['setting'], r['path']) for r in report['rows']] == [tuple(row[:2]) for row in rows]
    assert all(r['peak_gb'] > 0 and 'error' not in r for r in report['rows'])


def test_peak_memory_is_the_measuring_process_own():
    """A child started from a process with a large peak reports its own (ru_maxrss would carry
    the parent's over fork and exec)."""
    ballast = bytearray(1024 ** 3)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = ('import sys, torch; sys.path.insert(0, "tools"); from benchmark import peak_memory; '
            'print(peak_memory(torch.device("cpu"))["peak_gb"])')
    child = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    del ballast
    assert child.returncode == 0, child.stderr
    assert float(child.stdout) < 0.8


def test_bad_size_is_refused():
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'),
                          '--size', '100'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        'error: --size 100: (size−1) must be a multiple of 8 (e.g. 473, 233)']


def test_tiny_modes_benchmark_prints_a_row_per_mode():
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'benchmark_modes.py'), '--tiny',
                          '--device', 'cpu', '--modes', 'fused_attention', 'bf16', 'fp16'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ['default', 'fused_attention', 'bf16']   # fp16: CUDA only
    assert float(rows[0][2]) == 1.0 and float(rows[0][4]) == 1.0               # default ÷ itself


def test_cache_benchmark_cuts_backbone_passes(tmp_path):
    config = make_pascal_config(str(tmp_path))
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'benchmark_cache.py'),
                          '--config', config, '--shot', '5', '--episodes', '12', '--opts',
                          'val_size', '57', 'fts_size', '16', 'depth', '2', 'reduce_dim', '32',
                          'num_heads', '4', 'workers', '0'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:3]}
    assert float(rows['plain'][1]) == 6.0                  # query + 5 supports per episode
    assert float(rows['cached'][1]) < 6.0                  # images recur across episodes
    change = float(out.stdout.split('largest metric change')[1])
    assert change < 1e-4
