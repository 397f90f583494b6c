"""tools/benchmark.py runs end to end at a tiny size (its figures are not asserted)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_benchmark_prints_its_table():
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'), '--tiny',
                          '--settings', 'eval-1shot', 'train-b2'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 'matmul' in lines[0] and lines[1].split()[:3] == ['setting', 'impl', 'seconds']
    assert [line.split()[0] for line in lines[2:]] == ['eval-1shot', 'train-b2']


def test_bad_size_is_refused():
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'),
                          '--size', '100'], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and '(size−1) must be a multiple of 8' in out.stderr
