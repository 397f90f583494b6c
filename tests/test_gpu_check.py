"""The GPU validation kit (tools/gpu_check.sh) without a GPU: its CPU smoke run writes the whole
report; a failing or overrunning step is reported and the later ones still run; the targets and
the GPU-only parts of the report are filled from the benchmark's figures."""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tools import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ['# SCCAN GPU check', '## Environment', '## Steps', '## Tests on the device',
            "## Speed and memory: ours and the authors'", '## Targets', '## Fast modes']


def test_cpu_smoke_run_writes_every_section_of_the_report(tmp_path):
    """About a minute on an idle 2-core CPU (the limit allows for a loaded one)."""
    env = {k: v for k, v in os.environ.items() if k != 'OFFICIAL_SCCAN'}
    run = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'gpu_check.sh'), '--cpu-smoke',
                          '--out', str(tmp_path)], env={**env, 'PYTHON': sys.executable},
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    path = tmp_path / 'report.md'
    assert f'report: {path}' in run.stdout
    report = path.read_text()
    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert '**Result: all steps passed.**' in report and '| targets | skipped |' in report
    assert 'fused_attention] | passed' in report and 'max_abs_logit_change' in report
    assert 'fp16 autocast with loss scaling runs on CUDA only' in report      # a skip and why
    assert '| eval-1shot | api |' in report and '| eval-1shot | scripts+bf16 |' in report
    assert 'fused_attention ' in report.split('## Fast modes')[1]


def test_a_failing_or_overrunning_step_is_reported_and_stopped():
    failing = gpu_check.run_step('failing', [sys.executable, '-c', 'print("half"); raise SystemExit(3)'], 60)
    slow = gpu_check.run_step('slow', [sys.executable, '-c', 'import time; print("started", flush=True); '
                                       'time.sleep(120)'], 3)
    assert failing['status'] == 'failed' and 'half' in failing['output']
    assert slow['status'] == 'timed out' and 'started' in slow['output'] and slow['seconds'] < 60


def benchmark_row(setting, path, seconds, peak_gb):
    return {'setting': setting, 'path': path, 'episodes_per_call': 8, 'seconds': seconds, 'gflop': 100.0,
            'tflops': 0.1 / seconds, 'matmul_ratio': 0.5, 'busy_fraction': 0.9, 'peak_gb': peak_gb,
            'reserved_gb': peak_gb + 0.5}


def gpu_benchmark():
    """What tools/benchmark.py paths --reference --with-amp bf16 --json writes on a GPU (made up)."""
    figures = {'scripts': (0.9, 2.0), 'api': (0.95, 2.1), 'scripts+bf16': (0.3, 1.5), 'reference': (1.0, 4.0)}
    rows = []
    for setting in gpu_check.BENCHMARK_SETTINGS:
        slower = 1.2 if setting == 'eval-5shot' else 1.0      # api misses the time target there
        for path, (seconds, peak) in figures.items():
            rows.append(benchmark_row(setting, path, seconds * (slower if path == 'api' else 1), peak))
    for row in rows:
        reference = next(r for r in rows if r['setting'] == row['setting'] and r['path'] == 'reference')
        row.update(time_ratio=row['seconds'] / reference['seconds'],
                   memory_ratio=row['peak_gb'] / reference['peak_gb'])
    return {'mode': 'paths', 'header': 'device cuda (H100)', 'device': 'cuda:0', 'gpu': 'NVIDIA H100',
            'tiny': False, 'baseline': 'reference', 'rows': rows}


def gpu_modes():
    """What tools/benchmark.py modes --json writes on a GPU (made up)."""
    return {'mode': 'modes', 'header': 'device cuda:0, 473×473', 'rows': [
        {'mode': 'default', 'eval_seconds': 0.1, 'eval_ratio': 1.0, 'train_seconds': 0.5, 'train_ratio': 1.0,
         'argmax_agreement': 1.0, 'max_logit_change': 0.0},
        {'mode': 'bf16', 'eval_seconds': 0.05, 'eval_ratio': 0.5, 'train_seconds': 0.2, 'train_ratio': 0.4,
         'argmax_agreement': 0.97, 'max_logit_change': 0.41}]}


def test_the_report_shows_the_benchmarks_figures_and_the_targets_met_or_missed():
    args = argparse.Namespace(cpu_smoke=False)
    targets = gpu_check.targets_step(args, gpu_benchmark())
    missed = [v for v in targets['verdicts'] if v[2] != 'met']
    assert targets['status'] == 'failed' and missed == [
        ('float32 time ≤ 1.0× the reference', 'eval-5shot, api: 1.14×', 'missed')]
    assert len(targets['verdicts']) == 3 * 2 + 2 + 3
    steps = [{'name': name, 'status': 'passed', 'seconds': 1.0, 'limit': 10, 'output': 'rows', 'command': ''}
             for name in ('environment', 'tests', 'benchmark', 'modes')] + [targets]
    tests = [{'test': 'tests/test_cuda.py::test_golden_episodes_in_lower_precision[r50-bf16]', 'when': 'call',
              'outcome': 'passed', 'seconds': 1.0, 'properties': {'argmax_agreement': 0.98}, 'message': ''}]
    report = gpu_check.report(args, steps, {'gpus': []}, tests, {'paths': gpu_benchmark(), 'modes': gpu_modes()},
                              10.0)
    assert '**Result: failed: targets.**' in report
    assert ('| setting | path | episodes/call | seconds | GFLOP | TFLOP/s | ÷matmul | GPU busy | peak GB | '
            'reserved GB | time÷base | mem÷base |') in report
    assert '| eval-5shot | api | 8 | 1.1400 | 100.0 | 0.09 | 0.500 | 90 % | 2.10 | 2.60 | 1.14 | 0.53 |' in report
    assert '| bf16 | 0.050 | 0.50 | 0.200 | 0.40 | 97.000 % | 4.10e-01 | — | — |' in report
    assert 'max \\|Δlogit\\|' in report                      # a | in a cell does not split it
    assert 'test_golden_episodes_in_lower_precision[r50-bf16] 98.00 %' in report
    assert gpu_check.target_verdicts(args, dict(gpu_benchmark(), baseline='scripts')).startswith('not checked')


@pytest.mark.parametrize('earlier', ['report.md', 'benchmark.json'])
def test_an_earlier_runs_files_are_kept_unless_overwrite_is_asked(tmp_path, earlier):
    """A folder holding an earlier run's report, or only its benchmark figures (the report
    deleted, or the run killed before writing it): refused before any step runs."""
    kept = tmp_path / earlier
    kept.write_text('figures of the only GPU run so far')
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gpu_check.py'), '--cpu-smoke',
                          '--out', str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f'error: {kept} exists already; pass --overwrite to replace it, or write elsewhere']
    assert kept.read_text() == 'figures of the only GPU run so far'
    assert sorted(p.name for p in tmp_path.iterdir()) == [earlier]   # no step ran


def test_each_run_gets_a_new_folder_by_default():
    out = gpu_check.parse_args([]).out
    assert os.path.dirname(out) == os.path.join(ROOT, 'exp', 'gpu_check')
    assert re.fullmatch(r'\d{8}-\d{6}', os.path.basename(out))        # its start, to the second
    assert gpu_check.parse_args(['--out', 'elsewhere']).out == 'elsewhere'


def test_without_a_visible_gpu_it_stops_at_once_pointing_to_the_cpu_smoke_run(tmp_path):
    """Not 'tests: passed' with every test skipped, then failing benchmarks, under 'GPU run'."""
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gpu_check.py'), '--out',
                          str(tmp_path / 'check')], capture_output=True, text=True, timeout=120,
                         env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        'error: no GPU is visible to PyTorch (torch.cuda.is_available() is False): this kit '
        'measures a GPU; tools/gpu_check.sh --cpu-smoke checks the kit itself on the CPU']
    assert not (tmp_path / 'check').exists()


def processes_with(variable):
    """PIDs of this user's processes whose environment holds `variable` (NAME=value)."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                if variable.encode() in f.read().split(b'\0'):
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_check_stops_its_step_and_reports_what_ran(tmp_path, sig):
    """Ctrl-C (SIGINT) or `timeout` (SIGTERM) during the tests step: the step's process group
    gets the signal and ends (no orphan), the later steps do not run, the report says so."""
    out = tmp_path / 'check'
    kit = subprocess.Popen([sys.executable, os.path.join(ROOT, 'tools', 'gpu_check.py'),
                            '--cpu-smoke', '--out', str(out)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        for line in kit.stdout:           # the environment step ends, the tests step starts
            if line.startswith('[gpu_check] environment:'):
                break
        test_log = f'SCCAN_TEST_LOG={out / "tests.jsonl"}'
        deadline = time.time() + 60
        while not processes_with(test_log) and time.time() < deadline:
            time.sleep(0.1)
        assert processes_with(test_log), 'the tests step did not start'
        kit.send_signal(sig)
        rest = kit.communicate(timeout=120)[0]
    finally:
        kit.kill()
    assert kit.returncode == 130, rest
    assert f'[gpu_check] interrupted by {sig.name}: partial report {out / "report.md"}' in rest
    assert processes_with(test_log) == []                          # no step left running
    report = (out / 'report.md').read_text()
    assert '**Result: interrupted during tests; the steps after it did not run.**' in report
    for row in ('| environment | passed |', '| tests | interrupted |', '| benchmark | skipped |',
                '| modes | skipped |', '| targets | skipped |'):
        assert row in report
    assert '## Output of the tests step (interrupted)' in report
