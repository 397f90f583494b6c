"""The benchmark tools run end to end at a tiny size (their timings are not asserted)."""
import os
import subprocess
import sys

from fakedata import make_pascal_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_benchmark_prints_its_table():
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'), '--tiny',
                          '--settings', 'eval-1shot', 'eval-5shot-cached', 'train-b2'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 'matmul' in lines[0] and lines[1].split()[:3] == ['setting', 'impl', 'seconds']
    assert [line.split()[0] for line in lines[2:]] == ['eval-1shot', 'eval-5shot-cached', 'train-b2']


def test_bad_size_is_refused():
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'),
                          '--size', '100'], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and '(size−1) must be a multiple of 8' in out.stderr


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
