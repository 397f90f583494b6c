"""The GPU kit's report (tools/dev/gpu_check.py writes it after every step): report.md, in Markdown,
and figures.json, every figure the steps left; and the targets, checked on those figures.

The targets (one GPU, 473×473, ResNet-50, ratios to the authors' model measured in the same run):
evaluation per episode in float32 (the exact path) ≤ 0.25× their time and under bf16 autocast
≤ 0.15×, 1-shot and 5-shot; a training step at batch 8 in float32 ≤ 0.5×, under bf16 ≤ 0.3×,
its peak memory ≤ 0.6×; test_sccan.py end to end (data loading included) at ≥ 80 % of the
model-only episodes per second; the GPU busy (kernel time over wall time) ≥ 80 % of each
default path. The benchmark's tables are its own (benchmark.COLUMNS, benchmark.cells).
"""
import datetime
import json
import os
import subprocess
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # up from tools/dev/
sys.path.insert(0, REPO)
from tools.dev import benchmark  # noqa: E402
from tools.dev.gpu_check_steps import BENCHMARK_SETTINGS, OPTIONAL_PACKAGES, STEPS  # noqa: E402
from util.files.writer import write_atomic  # noqa: E402

EVAL_SETTINGS = ('eval-1shot', 'eval-5shot')
# (target, settings, paths, figure of a benchmark row, bound): a ratio to the authors' at most
RATIO_TARGETS = [
    ("eval, exact float32: time ≤ 0.25× the authors'", EVAL_SETTINGS, ('scripts',), 'time_ratio', 0.25),
    ("eval, bf16: time ≤ 0.15× the authors'", EVAL_SETTINGS, ('scripts+bf16',), 'time_ratio', 0.15),
    ("training step, batch 8, float32: time ≤ 0.5× the authors'", ('train-b8',), ('scripts',),
     'time_ratio', 0.5),
    ("training step, batch 8, bf16: time ≤ 0.3× the authors'", ('train-b8',), ('scripts+bf16',),
     'time_ratio', 0.3),
    ("training step, batch 8: peak memory ≤ 0.6× the authors'", ('train-b8',),
     ('scripts', 'scripts+bf16'), 'memory_ratio', 0.6),
]
BUSY = ('GPU busy ≥ 80 % of the wall time (kernel time ÷ wall), default path', 0.8)
END_TO_END = ("test_sccan.py end to end ≥ 80 % of the model-only episodes/s (eval-1shot, "
              "scripts)", 0.8)
FAILED = ('failed', 'timed out')


# ---- targets ------------------------------------------------------------------------------------
def target_verdicts(figures):
    """[(target, measured, verdict)]: verdict met, missed, or 'not measured: why'."""
    paths = figures.get('benchmark') or {}
    rows = {(r['setting'], r['path']): r for r in paths.get('rows', []) if 'error' not in r}
    verdicts = []
    for target, settings, path_names, key, bound in RATIO_TARGETS:
        for setting in settings:
            for path in path_names:
                why = (None if paths.get('baseline') == 'reference' else
                       "not measured: the authors' model was not (set OFFICIAL_SCCAN to the folder "
                       "holding their model/ and util/)" if paths else
                       'not measured: the benchmark step left no figures')
                verdicts.append(verdict(target, f'{setting}, {path}', rows.get((setting, path), {}).get(key),
                                        bound, at_most=True, why=why))
    for setting in BENCHMARK_SETTINGS:
        busy = rows.get((setting, 'scripts'), {}).get('busy_fraction')
        verdicts.append(verdict(BUSY[0], f'{setting}, scripts', busy, BUSY[1], at_most=False,
                                why=None if busy is not None else
                                'not measured: tools/dev/benchmark.py reported no busy_fraction'))
    verdicts.append(end_to_end_verdict(figures, rows))
    return verdicts


def verdict(target, what, value, bound, at_most, why=None):
    if why or value is None:
        return target, what, why or 'not measured'
    shown = f'{what}: {value:.2f}' + ('×' if at_most else '')
    met = value <= bound if at_most else value >= bound
    return target, shown, 'met' if met else 'missed'


def end_to_end_verdict(figures, rows):
    test = figures.get('test') or {}
    model_only = rows.get(('eval-1shot', 'scripts'), {}).get('seconds')
    if not test.get('episodes_per_second') or not model_only:
        return END_TO_END[0], 'test_sccan.py ÷ benchmark', (
            'not measured: needs the test and benchmark steps of the same run')
    ratio = test['episodes_per_second'] * model_only
    return verdict(END_TO_END[0], f'{test["episodes_per_second"]:.1f} ÷ {1 / model_only:.1f} episodes/s',
                   ratio, END_TO_END[1], at_most=False)


def targets_result(smoke, figures):
    """The targets as a step result: passed (every target measured met), failed (one missed),
    skipped (none measured, or a CPU smoke run, whose figures mean nothing)."""
    verdicts = target_verdicts(figures)
    measured = [v for v in verdicts if not v[2].startswith('not measured')]
    missed = [v for v in measured if v[2] == 'missed']
    status = ('skipped' if smoke or not measured else 'failed' if missed else 'passed')
    note = ('a CPU smoke run: the verdicts are shown, not asserted' if smoke else
            f'{len(measured) - len(missed)} of {len(measured)} measured met, '
            f'{len(verdicts) - len(measured)} not measured')
    return {'name': 'targets', 'status': status, 'seconds': 0.0, 'limit': None, 'note': note,
            'output': '', 'command': '', 'verdicts': verdicts}


# ---- Markdown -----------------------------------------------------------------------------------
def markdown_table(header, rows):
    """Lines of a Markdown table; a '|' inside a cell (e.g. |Δlogit|) is escaped."""
    def line(cells):
        return '| ' + ' | '.join(str(cell).replace('|', '\\|') for cell in cells) + ' |'
    return [line(header), '|' + ' --- |' * len(header)] + [line(row) for row in rows]


def number(value, digits=3):
    return '—' if value is None else f'{value:.{digits}f}'


def environment_section(env):
    gpus = '; '.join(f'{g["name"]} ({g["memory_gb"]:.0f} GB, capability {g["capability"]})'
                     for g in env.get('gpus', [])) or 'none visible to PyTorch'
    packages = ', '.join(f'{name} {version}' if version else
                         f'{name} NOT installed (needed by {OPTIONAL_PACKAGES.get(name, "?")})'
                         for name, version in (env.get('packages') or {}).items())
    official = os.environ.get('OFFICIAL_SCCAN')
    rows = [('GPU', gpus), ('driver', env.get('driver')),
            ('torch / CUDA / cuDNN', f'{env.get("torch")} / {env.get("cuda")} / {env.get("cudnn")}'),
            ('TF32: cuDNN convolutions / CUDA matmuls (PyTorch defaults, as the scripts run)',
             f'{env.get("tf32_cudnn_convolutions")} / {env.get("tf32_cuda_matmul")}'),
            ('Python, platform, CPU cores / torch threads',
             f'{env.get("python")}, {env.get("platform")}, '
             f'{env.get("cpu_count")} / {env.get("cpu_threads")}'),
            ('optional packages', packages or '—'),
            ('OFFICIAL_SCCAN', official or "not set: the authors' model was not measured")]
    return ['## Environment', ''] + markdown_table(('what', 'value'), rows)


def steps_section(results, plan_line):
    rows = [(r['name'], r['status'], f'{r["seconds"]:.0f}', budget(r['name']), r['limit'] or '—',
             r.get('note') or '') for r in results]
    return (['## Steps', '', plan_line, ''] +
            markdown_table(('step', 'status', 'seconds', 'budget on an H200 (s)', 'limit (s)', 'note'), rows))


def budget(name):
    return next((str(s.budget) for s in STEPS if s.name == name), '—')


def demo_section(demo):
    lines = ['### make demo (tools/demo.py)', '']
    if not demo.get('results'):
        return lines + ['No figures: the demo step wrote no report (see the steps above).']
    names = {'trained': '(a) SCCAN, meta-trained', 'untrained': '(b) SCCAN, untrained',
             'support_blind': '(c) support-blind: every object'}
    lines += markdown_table(('predictor', 'mIoU', 'FB-IoU'),
                            [(names.get(k, k), number(r['mIoU'], 4), number(r['FB-IoU'], 4))
                             for k, r in demo['results'].items()])
    lines += [''] + [f'- (a) − {names.get(k, k)[:3]} = {c["margin"]:+.4f} mIoU (target ≥ {c["target"]:.2f}): '
                     f'{"met" if c["met"] else "NOT met"}' for k, c in demo['checks'].items()]
    lines += ['', f'{demo["episodes"]} test episodes. Time: ' +
              ', '.join(f'{k} {v:.0f} s' for k, v in demo['seconds'].items()) + '.']
    if demo.get('examples'):
        lines += ['', f'![the demo\'s episodes]({demo["examples"]})']
    return lines


def tf32_section(tf32):
    lines = ['### TF32: the demo trained and tested with `tf32: False`, against the demo above', '']
    if not tf32.get('tf32'):
        return lines + ['No figures: the tf32 step left none (see the steps above).']
    rows = [(name, number(r['mIoU'], 4), f'[{r["interval"][0]:.4f}, {r["interval"][1]:.4f}]',
             number(r['seconds'].get('training'), 1), number(r['seconds'].get('testing'), 1))
            for name, r in (('tf32: True (the default)', tf32['tf32']),
                            ('tf32: False', tf32['full_float32']))]
    lines += markdown_table(('run', '(a) mIoU', '95 % interval', 'training s', 'testing s'), rows)
    return lines + ['', ('**Each mIoU lies inside the other run\'s interval**: TF32 changes the demo\'s '
                         'result no more than its episodes do, so the default `tf32: True` stands.'
                         if tf32['inside'] else
                         '**The mIoUs lie outside each other\'s intervals**: TF32 changed the demo\'s '
                         'result; `tf32: False` should become the default (docs/performance.md).')]


def determinism_section(det):
    lines = ["### Determinism: the demo's training and testing, run twice with `seed_deterministic: True`",
             '']
    if not det.get('runs'):
        return lines + ['No figures: the determinism step left none (see the steps above).']
    rows = [(r['name'], r['seed_deterministic'], r['steps'], number(r['seconds'], 2),
             number(r['seconds'] / max(r['steps'], 1), 4),
             float.fromhex(r['losses'][-1]) if r['losses'] else '—',
             r['weights_sha256'][:16], *tested(r.get('testing') or {})) for r in det['runs']]
    lines += markdown_table(('run', 'seed_deterministic', 'steps', 'seconds', 's/step', 'last loss',
                             'weights SHA-256', 'test mIoU', 'test loss'), rows)
    lines += ['', f'**The two deterministic runs are {"identical" if det["identical"] else "NOT identical"} '
                  "bit for bit** (every loss, the final weights, the test's mIoU, FB-IoU and loss). "
                  'Without determinism the losses moved '
                  f'by up to {det["largest_loss_change_without"]:.3g} from the deterministic ones, the '
                  f'final weights {"the same" if det["same_weights_without"] else "differ"}; determinism '
                  f'took {det["time_ratio"]:.2f}× the time of the same steps.']
    return lines


def tested(testing):
    """A determinism run's test mIoU and loss (float.hex in its figures), to 6 significant digits."""
    return tuple(f'{float.fromhex(testing[key]):.6g}' if key in testing else '—' for key in ('mIoU', 'loss'))


def scripts_section(figures):
    lines = ["### train_sccan.py and test_sccan.py: the paper's model on the benchmark", '']
    train, test = figures.get('train') or {}, figures.get('test') or {}
    lines.append(f'- train_sccan.py: {train["steps"]} steps, checkpoint `{train["checkpoint"]}`.'
                 if train.get('steps') is not None
                 else '- train_sccan.py: no checkpoint (see the steps above).')
    if not test.get('episodes'):
        return lines + ['- test_sccan.py: no report (see the steps above).']
    model_only = model_only_rate(figures)
    beside = (f'; the model alone (benchmark eval-1shot, scripts): {model_only:.1f} episodes/s, '
              f'end to end {test["episodes_per_second"] / model_only:.0%} of it' if model_only else
              '; the model-only rate was not measured in this run')
    lines.append(f'- test_sccan.py at {test["val_size"]}: {test["episodes"]} episodes in '
                 f'{test["seconds"]:.1f} s, **{test["episodes_per_second"]:.1f} episodes/s end to end** '
                 f'(data loading included; {test["rate_from"]}){beside}; mIoU {test["mIoU"]:.4f}.')
    return lines


def model_only_rate(figures):
    rows = (figures.get('benchmark') or {}).get('rows', [])
    seconds = next((r.get('seconds') for r in rows
                    if r['setting'] == 'eval-1shot' and r['path'] == 'scripts' and 'error' not in r), None)
    return 1 / seconds if seconds else None


def segmenting_section(figures):
    lines = ["### predict_sccan.py and the browser app: the demo's checkpoint on two images", '']
    predict, app = figures.get('predict') or {}, figures.get('app') or {}
    if predict.get('queries'):
        lines += markdown_table(('query', 'foreground', f'IoU with class {predict["class"]}'),
                                [(q['query'], f'{q["foreground"]:.1%}', number(q['IoU'], 3))
                                 for q in predict['queries']])
        if predict.get('overlay'):
            lines += ['', f'![predict_sccan.py\'s overlay]({predict["overlay"]})']
    else:
        lines.append('predict_sccan.py: no masks (see the steps above).')
    if 'segmented' in app:
        same = {True: 'the same bytes as predict_sccan.py\'s', False: 'NOT those of predict_sccan.py',
                None: 'not compared (predict_sccan.py did not run)'}[app['same_masks_as_predict']]
        lines += ['', f'The app (util/prediction/app.py): {app["segmented"]} of {app["queries"]} queries '
                      f'segmented in {app["seconds"]:.1f} s, masks {same}; its page: {app["page"]}.']
    else:
        lines += ['', 'The app: no figures (see the steps above).']
    return lines


def tests_section(tests):
    if not tests:
        return ['## Tests on the device (pytest -m cuda)', '', 'Not run.']
    results = [t for t in tests['records'] if t['when'] == 'call' or t['outcome'] != 'passed']
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
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def figures_table(mode, figures):
    """The benchmark's table of one mode's figures (its JSON), in Markdown."""
    return markdown_table([title for title, _, _ in benchmark.COLUMNS[mode]],
                          [benchmark.cells(mode, row) for row in figures['rows']])


def benchmark_section(figures):
    lines = ["## Speed and memory: ours and the authors' (tools/dev/benchmark.py paths)", '']
    if not figures:
        return lines + ['No figures: the benchmark step wrote none.']
    busy = [(r['setting'], r['path'], number(r.get('busy_fraction'), 2), number(r.get('tflops'), 1))
            for r in figures['rows'] if 'error' not in r]
    peak = figures.get('matmul_bf16_tflops')
    return lines + [figures['header'], '',
                    f'Ratios are to the {figures["baseline"]} row of the same setting; '
                    'on CUDA, peak GB is the allocated memory.', ''] + figures_table('paths', figures) + [
        '', 'GPU busy fraction (kernel time ÷ wall time) and achieved TFLOP/s, against a bf16 matmul of '
        + (f'{peak:.0f} TFLOP/s in the same run' if peak else 'the same run (not measured)')
        + ' ("—": not measured):', ''] + markdown_table(('setting', 'path', 'busy', 'TFLOP/s'), busy) + (
        top_kernels_section(figures['rows']))


def top_kernels_section(rows):
    """The kernels taking the most GPU time per call of our paths (benchmark.top_kernels): what
    the next optimisation should aim at, without another GPU run to find it."""
    kernels = [(r['setting'], r['path'], k['kernel'], number(k['launches'], 1), number(k['ms'], 3))
               for r in rows if r['path'] != 'reference' for k in r.get('top_kernels') or ()]
    if not kernels:
        return []
    return ['', "Where our paths' GPU time goes: the kernels taking the most time per call "
                '(launches and milliseconds per call; names cut at '
                f'{benchmark.KERNEL_NAME_CHARS} characters):', ''] + markdown_table(
        ('setting', 'path', 'kernel', 'launches', 'ms'), kernels)


def targets_section(result, records):
    lines = ['## Targets', '', result['note'] + '.']
    if 'verdicts' not in result:
        return lines
    lines += [''] + markdown_table(('target', 'measured', 'verdict'), result['verdicts'])
    agreement = [(t['test'].split('::', 1)[-1], t['properties']['argmax_agreement']) for t in records
                 if 'bf16' in t['test'] and 'argmax_agreement' in t['properties']]
    if agreement:
        lines += ['', 'bf16 argmax agreement with the authors\' float64 logits (golden episodes): ' +
                  ', '.join(f'{name} {100 * value:.2f} %' for name, value in agreement) + '.']
    return lines


def modes_section(figures):
    lines = ['## Fast modes (tools/dev/benchmark.py modes)', '']
    if not figures:
        return lines + ['Not run, or no figures (a GPU run measures them with `--only modes`).']
    return lines + [figures['header'], ''] + figures_table('modes', figures)


def failures_section(results):
    lines = []
    for r in results:
        if r['status'] in (*FAILED, 'interrupted'):
            lines += ['', f'## Output of the {r["name"]} step ({r["status"]})', '',
                      f'`{r["command"]}`', '', '```text', r['output'][-6000:].strip(), '```']
    return lines


def result_line(results):
    interrupted = [r['name'] for r in results if r['status'] == 'interrupted']
    failed = [r['name'] for r in results if r['status'] in FAILED]
    skipped = [f'{r["name"]} ({r["note"]})' for r in results
               if r['status'] == 'skipped' and r['name'] != 'targets']
    if interrupted:
        return 'interrupted during ' + ', '.join(interrupted) + '; the steps after it did not run'
    text = 'failed: ' + ', '.join(failed) if failed else 'every step run passed'
    return text + ('; skipped: ' + '; '.join(skipped) if skipped else '')


def report(run, results, seconds, finished):
    """report.md's text: `results` of the steps so far (the targets' last once `finished`)."""
    figures = run.figures
    mode = ('CPU smoke run: every step at tiny sizes on the CPU; the figures check the kit, not '
            'a GPU' if run.kit.smoke else 'GPU run')
    state = f'**Result: {result_line(results)}.**' if finished else '**Still running** (a partial report).'
    targets = next((r for r in results if r['name'] == 'targets'), None)
    lines = ['# SCCAN GPU check', '',
             f'{datetime.datetime.now().isoformat(timespec="seconds")}, commit {git_commit()}, {mode}, '
             f'{seconds:.0f} s in all.', '', state, '']
    lines += environment_section(figures.get('environment') or {}) + ['']
    lines += steps_section(results, run.plan_line) + ['']
    lines += ["## The user's path on the device", ''] + demo_section(figures.get('demo') or {})
    lines += [''] + determinism_section(figures.get('determinism') or {})
    lines += [''] + tf32_section(figures.get('tf32') or {})
    lines += [''] + scripts_section(figures) + [''] + segmenting_section(figures)
    records = (figures.get('tests') or {}).get('records', [])
    lines += [''] + tests_section(figures.get('tests')) + [''] + benchmark_section(figures.get('benchmark'))
    if targets:
        lines += [''] + targets_section(targets, records)
    lines += [''] + modes_section(figures.get('modes')) + failures_section(results)
    return '\n'.join(lines) + '\n'


def write_report(run, results, seconds, finished=False):
    """figures.json and report.md in the report's folder; returns report.md's path. Should the
    report fail to render, it holds the steps and why instead: the figures are never lost."""
    write_atomic(run.kit.figure_file('figures.json'), json.dumps({
        'smoke': run.kit.smoke, 'plan': run.plan_line, 'seconds': seconds, 'finished': finished,
        'steps': [{k: v for k, v in r.items() if k != 'output'} for r in results],
        'figures': run.figures}, indent=1, default=str))
    try:
        text = report(run, results, seconds, finished)
    except Exception:
        text = '\n'.join(['# SCCAN GPU check', '', '**The report could not be written in full**: every '
                          'figure is in figures.json.', ''] + steps_section(results, run.plan_line) +
                         ['', '```text', traceback.format_exc(), '```']) + '\n'
    return write_atomic(run.kit.figure_file('report.md'), text)


COMMIT_VARIABLE = 'SCCAN_COMMIT'     # the commit, for a copy of the tree without git or .git


def git_commit():
    """The commit the report measured: $SCCAN_COMMIT where given, else git's (noting
    uncommitted changes), else 'unknown' (no git on the machine, or no .git in the copy)."""
    if os.environ.get(COMMIT_VARIABLE):
        return os.environ[COMMIT_VARIABLE]
    try:
        out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                             text=True)
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return 'unknown'
    return (out.stdout.strip() or 'unknown') + (' (with uncommitted changes)' if dirty.stdout.strip() else '')
