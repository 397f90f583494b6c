"""One-command GPU validation: the user's path end to end on the device, the CUDA tests, the
benchmarks and their targets, in one Markdown report.

    tools/dev/gpu_check.sh                      # on a machine with a GPU: about 6 minutes on one H200
    tools/dev/gpu_check.sh --cpu-smoke          # every step at tiny sizes on the CPU (proves the kit)
    tools/dev/gpu_check.sh --only predict,app   # these steps, and those whose products they lack
    tools/dev/gpu_check.sh --skip tests         # the default plan without them
    tools/dev/gpu_check.sh --out DIR            # report in DIR (default exp/gpu_check/<date-time>)

The steps, in this order (tools/dev/gpu_check_steps.py says what each runs): environment, data, demo,
determinism, train, test, predict, app, benchmark, tests, tf32 and modes (a GPU run's default plan
leaves modes out; `--only modes` runs it), then the targets, checked on their figures
(tools/dev/gpu_check_report.py). Each step runs in its own process group with its own time limit,
whatever happened to the ones before; a step whose input a failed or skipped step should have
made is skipped, saying so, as is one that needs an optional package that is not installed
(tensorboardX for training). `--only` adds the steps that make what the asked ones need when no
earlier run left it in the scratch folder (--work, default exp/gpu_check/work/<gpu|cpu-smoke>,
the kit's own: its steps replace their outputs there); the environment always runs. The whole
run stops starting steps when --time-limit is near (default 530 s on a GPU: under 9 minutes).

The report, DIR/report.md (its path is printed), is written after every step, so that a run
killed from outside leaves what it measured; beside it, figures.json (every figure) and a few
figure files (gpu_check_steps.FIGURE_FILES), no subfolder. A folder that holds a report already
is refused unless --overwrite is given: a GPU's figures may be the only ones this project gets.
Without a GPU visible to PyTorch it stops at once and points to --cpu-smoke. Ctrl-C or SIGTERM
(e.g. from `timeout`) is passed on to the running step, which is given 10 s to end (then killed
with its process group), the steps after it are not run, and the report says what ran (exit
status 130). The exit status is 0 when no step failed.

The CPU smoke run runs every step (modes too) at tiny sizes on the CPU, with any GPU hidden: two
of the tests marked cuda (SMOKE_TESTS; all of them pass there too, in a few minutes), the tiny
model variant at 33×33 elsewhere. Its figures mean nothing; its report shows that the kit works.
Nothing is downloaded: the data is the synthetic benchmark, written on the spot.
"""
import argparse
import datetime
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # up from tools/dev/
sys.path.insert(0, REPO)
from tools.dev import gpu_check_report as reporting  # noqa: E402
from tools.dev.gpu_check_steps import (FIGURE_FILES, SMOKE_LIMIT, STEP, STEPS, Kit,  # noqa: E402
                                       optional_package, remove_outputs)
from util.cli import ArgumentParser, run_main  # noqa: E402
from util.files.checks import check_outputs  # noqa: E402

TIME_LIMIT = {False: 530, True: 1800}    # seconds of a whole run: on a GPU, under 9 minutes
REPORT_SECONDS = 10                      # kept back from the time limit for the last report
SHORTEST_STEP = 15                       # no step is started with less time than this left


def step_list(text):
    """--only / --skip: step names separated by commas."""
    names = [name.strip() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if name not in STEP]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected step names separated by commas, among {", ".join(STEP)}')
    return names


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0], epilog='Steps, in order: ' + '; '.join(
        f'{step.name}: {step.does}' + ('' if step.default else ' (--only)') for step in STEPS) + '.')
    p.add_argument('--cpu-smoke', action='store_true',
                   help='run every step on the CPU at tiny sizes (a check of the kit, not of a GPU)')
    p.add_argument('--out', help='report folder (default: exp/gpu_check/<date-time>, a new one)')
    p.add_argument('--overwrite', action='store_true', help="replace the report already in --out")
    p.add_argument('--only', type=step_list, metavar='STEP[,STEP...]',
                   help='run these steps (and those making what they need, when no earlier run left it)')
    p.add_argument('--skip', type=step_list, default=[], metavar='STEP[,STEP...]',
                   help='leave these steps out')
    p.add_argument('--work', help="the kit's scratch folder (default: exp/gpu_check/work/<gpu|cpu-smoke>)")
    p.add_argument('--time-limit', type=int, metavar='SECONDS',
                   help='of the whole run: a step gets at most what is left, and none starts with '
                        'less than 15 s (default: 530 on a GPU, 1800 for --cpu-smoke)')
    args = p.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(REPO, 'exp', 'gpu_check', datetime.datetime.now().strftime('%Y%m%d-%H%M%S'))
    if args.work is None:
        args.work = os.path.join(REPO, 'exp', 'gpu_check', 'work', 'cpu-smoke' if args.cpu_smoke else 'gpu')
    if args.time_limit is None:
        args.time_limit = TIME_LIMIT[args.cpu_smoke]
    return args


# ---- the plan -----------------------------------------------------------------------------------
def make_plan(kit, only=None, skip=()):
    """{step name: why it runs} and a line for the report saying what was asked. Without `only`
    the default plan (every step for a smoke run); with it those steps, the environment, and
    the steps making what they need where no earlier run left it (unless skipped)."""
    if only:
        asked = set(only) | {'environment'}
        line = f'Asked: --only {",".join(only)}'
    else:
        asked = {step.name for step in STEPS if step.default or kit.smoke}
        left_out = [step.name for step in STEPS if step.name not in asked]
        line = 'The default plan' + (f' (every step but {", ".join(left_out)})' if left_out else '')
    asked -= set(skip)
    if skip:
        line += f' --skip {",".join(skip)}'
    why = {name: 'asked' for name in asked}
    pending = [name for name in STEP if name in asked]
    while pending:
        step = STEP[pending.pop(0)]
        for need in step.needs:
            if need not in why and need not in skip and made(kit, need) is None:
                why[need] = f'run for {step.name}'
                pending.append(need)
    added = [name for name in STEP if why.get(name, 'asked') != 'asked']
    line += (f'; added: {", ".join(added)} (what the steps asked need)' if added else '') + '.'
    return {name: why[name] for name in STEP if name in why}, line


def made(kit, name):
    """What step `name` leaves for the steps after it (gpu_check_steps.Step.product), or None,
    also when finding it fails: the report comes first."""
    try:
        return STEP[name].product(kit)
    except Exception:
        return None


class Run:
    """One run of the kit: its Kit, its plan, and the steps' results and figures so far."""

    def __init__(self, kit, plan, plan_line):
        self.kit, self.plan, self.plan_line = kit, plan, plan_line
        self.results = {}
        self.figures = {}

    def passed(self, name):
        return self.results.get(name, {}).get('status') == 'passed'


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


# ---- running the plan ---------------------------------------------------------------------------
def result_of(name, status, note, seconds=0.0, limit=None, output='', command=''):
    return {'name': name, 'status': status, 'seconds': seconds, 'limit': limit, 'note': note,
            'output': output, 'command': command}


def not_planned(run, step, skip):
    note = ('--skip' if step.name in skip else 'not asked (--only)' if run.plan_line.startswith('Asked')
            else f'not in the default plan: --only {step.name} runs it')
    return result_of(step.name, 'not run', note)


def why_not(run, step, interruption, seconds_left):
    """Why a planned step cannot run now (it is then skipped), or None."""
    if interruption.signum is not None:
        return 'not run: the check was interrupted'
    missing = [name for name in step.requires if optional_package(name) is None]
    if missing:
        return (f'not run: needs {", ".join(missing)}, which is not installed (pip install it, or put '
                "a folder holding it on PYTHONPATH)")
    for need in step.needs:
        if made(run.kit, need) is None:
            done = run.results.get(need, {}).get('status', 'not run')
            return f'not run: needs what the {need} step makes ({need}: {done})'
    if seconds_left < SHORTEST_STEP:
        return 'not run: the time limit of the whole run (--time-limit) is spent'
    return None


def run_planned(run, step, limit, interruption):
    """Run one step and read its figures into run.figures; returns its result."""
    kit = run.kit
    if step.reusable and made(kit, step.name):
        result = result_of(step.name, 'passed', 'reused: an earlier run made it')
    else:
        remove_outputs(step, kit)
        try:
            cmd = step.command(run)
        except Exception as e:          # e.g. the images it needs are not there: its own failure
            return result_of(step.name, 'failed', f'{type(e).__name__}: {e}', output=str(e))
        result = dict(run_step(step.name, cmd, limit, kit.environment(), interruption), note='')
    try:
        run.figures[step.name] = figures = step.figures(run, result)
    except Exception as e:              # a report with the other steps' figures comes first
        run.figures[step.name] = figures = {}
        result['note'] = f'its figures could not be read: {type(e).__name__}: {e}'
        result['status'] = 'failed' if result['status'] == 'passed' else result['status']
    status, note = step.verdict(run, result['status'], figures)
    return dict(result, status=status, note=note or result['note'])


def run_all(run, skip=(), time_limit=TIME_LIMIT[False], interruption=NO_INTERRUPTION,
            on_step=lambda results: None):
    """Every step of the plan, in order, then the targets; `on_step(results)` after each.
    Returns the results (one per step, planned or not, and the targets)."""
    deadline = time.time() + time_limit - REPORT_SECONDS
    results = []
    for step in STEPS:
        if step.name not in run.plan:
            result = not_planned(run, step, skip)
        else:
            reason = why_not(run, step, interruption, deadline - time.time())
            limit = min(SMOKE_LIMIT if run.kit.smoke else step.limit, int(deadline - time.time()))
            result = (result_of(step.name, 'skipped', reason) if reason else
                      run_planned(run, step, limit, interruption))
            if run.plan[step.name] != 'asked' and result['status'] != 'skipped':
                result['note'] = '; '.join(filter(None, [run.plan[step.name], result['note']]))
        run.results[step.name] = result
        results.append(result)
        if step.name in run.plan:
            print(f'[gpu_check] {step.name}: {result["status"]} ({result["seconds"]:.0f} s)'
                  + (f'; {result["note"]}' if result['note'] else ''), flush=True)
        on_step(results)
    results.append(result_of('targets', 'skipped', 'not checked: the check was interrupted')
                   if interruption.signum is not None else
                   reporting.targets_result(run.kit.smoke, run.figures))
    return results


def main(argv=None):
    args = parse_args(argv)
    if not args.cpu_smoke:
        check_gpu_visible()
    kit = Kit(os.path.abspath(args.out), os.path.abspath(args.work), args.cpu_smoke)
    path = kit.figure_file('report.md')
    # before minutes of work: the figures of an earlier run go only with --overwrite
    check_outputs([path] + [kit.figure_file(name) for name in FIGURE_FILES], overwrite=args.overwrite)
    for name in FIGURE_FILES:           # none of an earlier run's files may pass for this one's
        if os.path.exists(kit.figure_file(name)):
            os.remove(kit.figure_file(name))
    run = Run(kit, *make_plan(kit, args.only, args.skip))
    print(f'[gpu_check] {run.plan_line} Steps: {", ".join(run.plan)}; report: {path}', flush=True)
    start = time.time()
    with Interruption() as interruption:
        results = run_all(run, args.skip, args.time_limit, interruption,
                          lambda done: reporting.write_report(run, done, time.time() - start))
        reporting.write_report(run, results, time.time() - start, finished=True)
    failed = [r for r in results if r['status'] in reporting.FAILED]
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
                           'this kit measures a GPU; tools/dev/gpu_check.sh --cpu-smoke checks the kit '
                           'itself on the CPU')


if __name__ == '__main__':
    sys.exit(run_main(main, (NoGPU, 'error', 2)))
