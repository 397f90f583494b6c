"""One-command GPU validation: the CUDA tests, the benchmarks, one Markdown report.

    tools/gpu_check.sh                  # on a machine with a GPU: under 9 minutes on one
    tools/gpu_check.sh --cpu-smoke      # the same steps at tiny sizes on the CPU (proves the kit)
    tools/gpu_check.sh --out DIR        # report in DIR (default exp/gpu_check/<date-time>)

Steps, each in its own process group with its own time limit, each run whatever happened to the
ones before:
  environment  GPU, driver, torch / CUDA / cuDNN versions, TF32 settings
  tests        pytest -m cuda (tests/test_cuda.py) on the GPU, with the figures the tests record
  benchmark    tools/benchmark.py paths: eval 1-shot, eval 5-shot, train batch 8; the scripts,
               bare-API and bf16 paths, and the authors' model (--reference) when OFFICIAL_SCCAN
               is set
  modes        tools/benchmark.py modes: each fast mode but compile against the default
  targets      the performance targets, checked on the benchmark's figures
Nothing is downloaded; the tests write their synthetic data locally (util/datasets/synthetic.py). The
report goes to DIR/report.md (its path is printed); the exit status is 0 when no step failed.
A folder that holds a report already is refused unless --overwrite is given: a GPU's figures may
be the only ones this project gets. Without a GPU visible to PyTorch it stops at once and points
to --cpu-smoke. Ctrl-C or SIGTERM (e.g. from `timeout`) is passed on to the running step, which
is given 10 s to end (then killed with its process group), the steps after it are not run, and
the report says what ran (exit status 130).

The CPU smoke run runs the same steps on the CPU at tiny sizes, so that it takes about a minute:
two of the tests marked cuda (SMOKE_TESTS) on the CPU (SCCAN_CUDA_TESTS_DEVICE=cpu; all of them
pass there too, in a few minutes), the benchmarks with --tiny (the tiny model variant). Its
figures mean nothing; its report shows that the kit works. The report's tables are the
benchmark's own (benchmark.COLUMNS, benchmark.cells), read from the JSON it writes.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path[:0] = [REPO, TOOLS]
import benchmark  # noqa: E402  (tools/benchmark.py)
from util.cli import ArgumentParser, run_main  # noqa: E402
from util.outputs import check_outputs, write_atomic  # noqa: E402

PYTHON = sys.executable

# Seconds per step on one GPU: 500 in all, under 9 minutes with the kit's own few seconds.
LIMITS = {'environment': 20, 'tests': 230, 'benchmark': 140, 'modes': 110}
SMOKE_LIMITS = {'environment': 60, 'tests': 300, 'benchmark': 300, 'modes': 300}   # a loaded CPU
# The tests the CPU smoke run selects (`pytest -k`): one that records figures, one that skips.
SMOKE_TESTS = 'plain_path and fused_attention or steps and fp16'
BENCHMARK_SETTINGS = ['eval-1shot', 'eval-5shot', 'train-b8']
# What the steps write in the report's folder besides report.md.
FIGURE_FILES = ('tests.jsonl', 'benchmark.json', 'modes.json')
TARGETS = {   # target: (settings, paths, ratio to the reference, upper bound)
    'float32 time ≤ 1.0× the reference': (BENCHMARK_SETTINGS, ('scripts', 'api'), 'time_ratio', 1.0),
    'float32 peak memory ≤ 0.6× the reference at batch 8': (['train-b8'], ('scripts', 'api'), 'memory_ratio', 0.6),
    'bf16 ≥ 2.5× faster than the reference in float32': (BENCHMARK_SETTINGS, ('scripts+bf16',), 'time_ratio', 1 / 2.5),
}


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cpu-smoke', action='store_true',
                   help='run every step on the CPU at tiny sizes (a check of the kit, not of a GPU)')
    p.add_argument('--out', help='report folder (default: exp/gpu_check/<date-time>, a new one)')
    p.add_argument('--overwrite', action='store_true', help="replace the report already in --out")
    p.add_argument('--environment', action='store_true', help=argparse.SUPPRESS)   # internal step
    args = p.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(REPO, 'exp', 'gpu_check', datetime.datetime.now().strftime('%Y%m%d-%H%M%S'))
    return args


# ---- running steps ------------------------------------------------------------------------------
class Interrupted(Exception):
    """SIGINT or SIGTERM reached the kit while a step ran."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interruption:
    """SIGINT/SIGTERM while installed: raised as Interrupted in a running step (run_step passes
    it on to the step's process group), else remembered (`signum`) for the loop over steps.
    Later signals only add to the record: the kit is stopping already."""

    def __init__(self):
        self.signum = None
        self.step_running = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        first = self.signum is None
        self.signum = self.signum or signum
        if first and self.step_running:
            raise Interrupted(signum)


NO_INTERRUPTION = Interruption()        # never installed: for a step run on its own


def run_step(name, cmd, limit, env=None, interruption=NO_INTERRUPTION):
    """Run `cmd` from the repository root in its own process group, killed (with everything it
    started) after `limit` seconds, or after `interruption`'s signal has been passed on to it.
    Returns {'name', 'status' (passed / failed / timed out / interrupted), 'seconds', 'limit',
    'output' (stdout and stderr), 'command'}."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        interruption.step_running = True
        if interruption.signum is not None:      # it came while the step was being started
            raise Interrupted(interruption.signum)
        output, _ = proc.communicate(timeout=limit)
        status = 'passed' if proc.returncode == 0 else 'failed'
    except subprocess.TimeoutExpired:
        output = stop_group(proc)
        status = 'timed out'
    except Interrupted as e:
        output = stop_group(proc, e.signum)
        status = 'interrupted'
    finally:
        interruption.step_running = False
    print(f'[gpu_check] {name}: {status} ({time.time() - start:.0f} s)', flush=True)
    return {'name': name, 'status': status, 'seconds': time.time() - start, 'limit': limit,
            'output': output, 'command': ' '.join(cmd)}


def stop_group(proc, first=signal.SIGTERM):
    """`first` (SIGTERM, or the signal the kit got) to the step's process group, SIGKILL 10 s
    later; returns what it printed."""
    for sig, grace in ((first, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.communicate(timeout=grace)[0]
        except subprocess.TimeoutExpired:
            continue
    return proc.communicate()[0]


def skipped(name, reason):
    return {'name': name, 'status': 'skipped', 'seconds': 0.0, 'limit': None, 'output': reason,
            'command': ''}


def environment():
    """What the report states about the machine (printed as JSON by --environment)."""
    import torch
    info = {'python': platform.python_version(), 'platform': platform.platform(),
            'torch': torch.__version__, 'cuda': torch.version.cuda,
            'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            'cpu_threads': torch.get_num_threads(), 'cuda_available': torch.cuda.is_available(),
            'tf32_cudnn_convolutions': torch.backends.cudnn.allow_tf32,
            'tf32_cuda_matmul': torch.backends.cuda.matmul.allow_tf32,
            'gpus': [], 'driver': nvidia_smi('driver_version')}
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        info['gpus'].append({'name': props.name, 'memory_gb': props.total_memory / 1024 ** 3,
                             'capability': f'{props.major}.{props.minor}'})
    return info


def nvidia_smi(field):
    try:
        out = subprocess.run(['nvidia-smi', f'--query-gpu={field}', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f'unknown ({type(e).__name__})'
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else 'unknown'


def run_all(args, interruption=NO_INTERRUPTION):
    """Every step, in order, until one is interrupted; returns (steps, environment, test
    records, benchmark results)."""
    os.makedirs(args.out, exist_ok=True)
    limits = SMOKE_LIMITS if args.cpu_smoke else LIMITS
    paths = {name: os.path.join(args.out, name) for name in FIGURE_FILES}
    for path in paths.values():
        if os.path.exists(path):
            os.remove(path)
    plan = [('environment', [PYTHON, __file__, '--environment'], None),
            ('tests', tests_command(args), tests_environment(args, paths)),
            ('benchmark', benchmark_command(args, paths['benchmark.json']), None),
            ('modes', modes_command(args, paths['modes.json']), None)]
    steps = []
    for name, cmd, env in plan:
        if interruption.signum is not None:
            steps.append(skipped(name, 'not run: the check was interrupted'))
        else:
            steps.append(run_step(name, cmd, limits[name], env, interruption))
    env_info = json_output(steps[0])
    tests = read_jsonl(paths['tests.jsonl'])
    figures = {'paths': read_json(paths['benchmark.json']), 'modes': read_json(paths['modes.json'])}
    steps.append(skipped('targets', 'not checked: the check was interrupted')
                 if interruption.signum is not None else targets_step(args, figures['paths']))
    return steps, env_info, tests, figures


def tests_command(args):
    cmd = [PYTHON, '-m', 'pytest', '-q', '-m', 'cuda', '-p', 'no:cacheprovider', 'tests/test_cuda.py']
    return cmd + (['-k', SMOKE_TESTS] if args.cpu_smoke else [])


def tests_environment(args, paths):
    """SCCAN_TEST_LOG: a JSON line per test (tests/conftest.py), so that a timed-out run still
    reports what finished."""
    env = {**os.environ, 'SCCAN_TEST_LOG': paths['tests.jsonl']}
    if args.cpu_smoke:
        env['SCCAN_CUDA_TESTS_DEVICE'] = 'cpu'
    return env


def benchmark_command(args, json_path):
    cmd = [PYTHON, 'tools/benchmark.py', 'paths', '--with-amp', 'bf16', '--json', json_path]
    if args.cpu_smoke:
        return cmd + ['--device', 'cpu', '--tiny', '--settings', 'eval-1shot']
    return cmd + ['--device', 'cuda', '--settings', *BENCHMARK_SETTINGS] + (
        ['--reference'] if os.environ.get('OFFICIAL_SCCAN') else [])


def modes_command(args, json_path):
    cmd = [PYTHON, 'tools/benchmark.py', 'modes', '--json', json_path]
    if args.cpu_smoke:
        return cmd + ['--device', 'cpu', '--tiny', '--modes', 'fused_attention']
    # Not compile: compiling the full model for eval and training takes minutes (its
    # correctness and compilation time come from the tests).
    return cmd + ['--device', 'cuda', '--modes', 'contiguous', 'fused_attention', 'bf16', 'fp16']


def json_output(step):
    try:
        return json.loads(step['output'].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_jsonl(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


# ---- targets ------------------------------------------------------------------------------------
def target_verdicts(args, figures):
    """[(target, measured, verdict)] for TARGETS, or the reason none was checked."""
    if args.cpu_smoke:
        return 'not checked: a CPU smoke run (tiny model, no reference)'
    if not figures or figures['baseline'] != 'reference':
        return ("not checked: the authors' model was not measured (set OFFICIAL_SCCAN to the folder "
                "holding their model/ and util/)")
    rows = {(r['setting'], r['path']): r for r in figures['rows']}
    verdicts = []
    for target, (settings, paths, quantity, bound) in TARGETS.items():
        for setting in settings:
            for path in paths:
                value = rows.get((setting, path), {}).get(quantity)
                measured = f'{setting}, {path}: ' + ('not measured' if value is None else f'{value:.2f}×')
                verdicts.append((target, measured, 'not measured' if value is None else
                                 'met' if value <= bound else 'missed'))
    return verdicts


def targets_step(args, figures):
    verdicts = target_verdicts(args, figures)
    if isinstance(verdicts, str):
        return skipped('targets', verdicts)
    missed = [v for v in verdicts if v[2] != 'met']
    return {'name': 'targets', 'status': 'failed' if missed else 'passed', 'seconds': 0.0,
            'limit': None, 'output': f'{len(verdicts) - len(missed)} of {len(verdicts)} met',
            'command': '', 'verdicts': verdicts}


# ---- the report ---------------------------------------------------------------------------------
def markdown_table(header, rows):
    """Lines of a Markdown table; a '|' inside a cell (e.g. |Δlogit|) is escaped."""
    def line(cells):
        return '| ' + ' | '.join(str(cell).replace('|', '\\|') for cell in cells) + ' |'
    return [line(header), '|' + ' --- |' * len(header)] + [line(row) for row in rows]


def environment_section(env_info):
    gpus = '; '.join(f'{g["name"]} ({g["memory_gb"]:.0f} GB, capability {g["capability"]})'
                     for g in env_info.get('gpus', [])) or 'none visible to PyTorch'
    official = os.environ.get('OFFICIAL_SCCAN')
    rows = [('GPU', gpus), ('driver', env_info.get('driver')),
            ('torch / CUDA / cuDNN', f'{env_info.get("torch")} / {env_info.get("cuda")} / {env_info.get("cudnn")}'),
            ('TF32: cuDNN convolutions / CUDA matmuls (PyTorch defaults, as the scripts run)',
             f'{env_info.get("tf32_cudnn_convolutions")} / {env_info.get("tf32_cuda_matmul")}'),
            ('Python, platform, CPU threads',
             f'{env_info.get("python")}, {env_info.get("platform")}, {env_info.get("cpu_threads")}'),
            ('OFFICIAL_SCCAN', official or "not set: the authors' model was not measured")]
    return ['## Environment', ''] + markdown_table(('what', 'value'), rows)


def steps_section(steps):
    rows = [(s['name'], s['status'], f'{s["seconds"]:.0f}', s['limit'] or '—') for s in steps]
    return ['## Steps', ''] + markdown_table(('step', 'status', 'seconds', 'limit (s)'), rows)


def tests_section(tests):
    results = [t for t in tests if t['when'] == 'call' or t['outcome'] != 'passed']
    counts = {o: sum(t['outcome'] == o for t in results) for o in ('passed', 'failed', 'skipped')}
    lines = ['## Tests on the device (pytest -m cuda)', '',
             f'{counts["passed"]} passed, {counts["failed"]} failed, {counts["skipped"]} skipped.', '']
    rows = [(t['test'].split('::', 1)[-1], t['outcome'], f'{t["seconds"]:.1f}',
             '; '.join(f'{k} {format_figure(v)}' for k, v in t['properties'].items())
             or (t['message'].splitlines()[-1][:200] if t['outcome'] == 'skipped' and t['message'] else ''))
            for t in results]
    lines += markdown_table(('test', 'outcome', 'seconds', 'figures (or why skipped)'), rows)
    for t in results:
        if t['outcome'] == 'failed':
            lines += ['', f'**{t["test"]}** ({t["when"]}) failed:', '', '```text', t['message'], '```']
    return lines


def format_figure(value):
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value)


def figures_table(mode, figures):
    """The benchmark's table of one mode's figures (its JSON), in Markdown."""
    return markdown_table([title for title, _, _ in benchmark.COLUMNS[mode]],
                          [benchmark.cells(mode, row) for row in figures['rows']])


def benchmark_section(figures):
    lines = ["## Speed and memory: ours and the authors' (tools/benchmark.py paths)", '']
    if not figures:
        return lines + ['No figures: the benchmark step wrote none (see its output below).']
    return lines + [figures['header'], '', f'Ratios are to the {figures["baseline"]} row of the same setting; '
                    'on CUDA, peak GB is the allocated memory.', ''] + figures_table('paths', figures)


def targets_section(step, tests):
    lines = ['## Targets', '']
    if 'verdicts' not in step:
        return lines + [step['output'] + '.']
    lines += markdown_table(('target', 'measured (ratio to the reference)', 'verdict'), step['verdicts'])
    agreement = [(t['test'].split('::', 1)[-1], t['properties']['argmax_agreement']) for t in tests
                 if 'bf16' in t['test'] and 'argmax_agreement' in t['properties']]
    if agreement:
        lines += ['', 'bf16 argmax agreement with the authors\' float64 logits (golden episodes): ' +
                  ', '.join(f'{name} {100 * value:.2f} %' for name, value in agreement) + '.']
    return lines


def modes_section(figures):
    lines = ['## Fast modes (tools/benchmark.py modes)', '']
    if not figures:
        return lines + ['No figures: the modes step wrote none (see its output below).']
    return lines + [figures['header'], ''] + figures_table('modes', figures)


def failures_section(steps):
    lines = []
    for step in steps:
        if step['status'] in ('failed', 'timed out', 'interrupted') and step['name'] != 'targets':
            lines += ['', f'## Output of the {step["name"]} step ({step["status"]})', '',
                      f'`{step["command"]}`', '', '```text', step['output'][-6000:].strip(), '```']
    return lines


def report(args, steps, env_info, tests, figures, seconds):
    failed = [s['name'] for s in steps if s['status'] in ('failed', 'timed out')]
    interrupted = [s['name'] for s in steps if s['status'] == 'interrupted']
    mode = ('CPU smoke run: every step at tiny sizes on the CPU; the figures check the kit, not '
            'a GPU' if args.cpu_smoke else 'GPU run')
    result = ('interrupted during ' + ', '.join(interrupted) + '; the steps after it did not run'
              if interrupted else 'failed: ' + ', '.join(failed) if failed else 'all steps passed')
    lines = ['# SCCAN GPU check', '',
             f'{datetime.datetime.now().isoformat(timespec="seconds")}, commit {git_commit()}, {mode}, '
             f'{seconds:.0f} s in all.', '',
             f'**Result: {result}.**', '']
    lines += environment_section(env_info) + [''] + steps_section(steps) + [''] + tests_section(tests)
    lines += [''] + benchmark_section(figures['paths']) + [''] + targets_section(steps[-1], tests)
    lines += [''] + modes_section(figures['modes']) + failures_section(steps)
    return '\n'.join(lines) + '\n'


def git_commit():
    out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=REPO, capture_output=True, text=True)
    return (out.stdout.strip() or 'unknown') + (' (with uncommitted changes)' if dirty.stdout.strip() else '')


def main(argv=None):
    args = parse_args(argv)
    if args.environment:
        print(json.dumps(environment()))
        return 0
    if not args.cpu_smoke:
        check_gpu_visible()
    path = os.path.join(args.out, 'report.md')
    # before minutes of work: the figures of an earlier run go only with --overwrite
    check_outputs([path] + [os.path.join(args.out, name) for name in FIGURE_FILES],
                  overwrite=args.overwrite)
    start = time.time()
    with Interruption() as interruption:
        steps, env_info, tests, figures = run_all(args, interruption)
        write_atomic(path, report(args, steps, env_info, tests, figures, time.time() - start))
    failed = [s for s in steps if s['status'] in ('failed', 'timed out')]
    if interruption.signum is not None:
        print(f'[gpu_check] interrupted by {signal.Signals(interruption.signum).name}: partial '
              f'report {path}')
        return 130
    print(f'[gpu_check] report: {path}' + (f' ({len(failed)} step(s) failed)' if failed else ''))
    return 1 if failed else 0


class NoGPU(Exception):
    """A GPU run on a machine where PyTorch sees no GPU."""


def check_gpu_visible():
    """A GPU run needs a GPU: without one, every CUDA test would skip and the benchmarks fail."""
    import torch
    if not torch.cuda.is_available():
        raise NoGPU('no GPU is visible to PyTorch (torch.cuda.is_available() is False): '
                           'this kit measures a GPU; tools/gpu_check.sh --cpu-smoke checks the kit '
                           'itself on the CPU')


if __name__ == '__main__':
    sys.exit(run_main(main, (NoGPU, 'error', 2)))
