"""The GPU validation kit (tools/dev/gpu_check.sh) without a GPU: a CPU smoke rerun of one step with
what an earlier run left writes the whole report; the plan (--only, --skip, the steps that make
what the asked ones need); a failing, overrunning or impossible step is reported and the later
ones still run, the report rewritten after each; every step's command is one its tool accepts,
for a GPU run too; determinism is judged bit for bit; the report and the targets from the
figures a GPU run leaves (made up here)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import predict_sccan
import test_sccan
import train_sccan
from model import build_sccan
from model.checkpoint import weights_checkpoint
from tools import demo
from tools.dev import benchmark, gpu_check, gpu_check_report, gpu_check_runs, gpu_check_steps
from tools import make_synthetic
from util.config import load_config, merged_opts
from util.datasets.synthetic import write_benchmark
from util.files.writer import save_checkpoint, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ['# SCCAN GPU check', '## Environment', '## Steps', "## The user's path on the device",
            '### make demo', '### Determinism', '### TF32', '### train_sccan.py and test_sccan.py',
            '### predict_sccan.py and the browser app', '## Tests on the device',
            "## Speed and memory: ours and the authors'", '## Targets', '## Fast modes']
GRADIO = gpu_check_steps.optional_package('gradio')


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    """A smoke run's scratch folder as an earlier run leaves it: the benchmark (the data step's
    product) and the demo's report with its checkpoint (the demo step's), the tiny model with
    random weights."""
    work = tmp_path_factory.mktemp('work')
    kit = gpu_check_steps.Kit(str(work / 'unused'), str(work), smoke=True)
    write_benchmark(kit.data, demo.parse_args([]).seed, *kit.sizes.images)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(weights_checkpoint(build_sccan('tiny'), epoch=0, shot=1,
                                                    config={'shot': 1, 'val_size': 33}),
                                 kit.path('demo', 'snapshot', 'train_latest.pth'))
    write_json(gpu_check_steps.demo_report(kit), {'checkpoint': checkpoint})
    return kit


def test_a_smoke_rerun_of_one_step_uses_what_an_earlier_run_left(scratch, tmp_path):
    """--only predict with the benchmark and the demo's checkpoint in the scratch folder: the
    environment and predict run, nothing else; the report has every section, the figures and
    the overlay beside it, no other file. The app's handlers then give predict_sccan.py's masks
    byte for byte."""
    out = tmp_path / 'report'
    env = {k: v for k, v in os.environ.items() if k != 'OFFICIAL_SCCAN'}
    run = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'dev', 'gpu_check.sh'), '--cpu-smoke', '--only',
                          'predict', '--out', str(out), '--work', scratch.work],
                         env={**env, 'PYTHON': sys.executable}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.splitlines()[0] == (f'[gpu_check] Asked: --only predict. Steps: environment, '
                                          f'predict; report: {out / "report.md"}')
    assert f'[gpu_check] report: {out / "report.md"}' in run.stdout
    assert sorted(os.listdir(out)) == ['figures.json', 'predict_overlay.png', 'report.md']
    report = (out / 'report.md').read_text()
    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert '**Result: every step run passed.**' in report
    for row in ('| environment | passed |', '| data | not run | 0 | 5 | — | not asked (--only) |',
                '| demo | not run |', '| predict | passed |', '| modes | not run |',
                '| targets | skipped | 0 | — | — | a CPU smoke run: the verdicts are shown, not asserted |'):
        assert row in report
    assert re.search(r'\| syn_val_000\d\d\.jpg \| \d+\.\d% \| \d\.\d{3} \|', report)
    assert '![predict_sccan.py\'s overlay](predict_overlay.png)' in report
    figures = json.loads((out / 'figures.json').read_text())
    assert figures['finished'] and [s['status'] for s in figures['steps'] if s['status'] != 'not run'] == [
        'passed', 'passed', 'skipped']
    assert len(figures['figures']['predict']['queries']) == 2

    app, ok = gpu_check_runs.app(scratch, gpu_check_steps.predict_folder(scratch))
    assert ok and app['segmented'] == app['queries'] == 2 and app['same_masks_as_predict'] is True
    assert app['page'] == (f'built (Gradio {GRADIO})' if GRADIO else
                           'not built: Gradio is not installed (pip install -r requirements-app.txt)')


def kit_in(folder, smoke=True):
    return gpu_check_steps.Kit(str(folder / 'out'), str(folder / 'work'), smoke)


def test_the_plan_adds_what_the_asked_steps_lack_and_leaves_out_what_is_skipped(scratch, tmp_path):
    empty = kit_in(tmp_path)
    assert list(gpu_check.make_plan(kit_in(tmp_path, smoke=False))[0]) == [
        s.name for s in gpu_check_steps.STEPS if s.name != 'modes']
    assert list(gpu_check.make_plan(empty)[0]) == [s.name for s in gpu_check_steps.STEPS]
    plan, line = gpu_check.make_plan(empty, only=['app', 'test'])
    assert plan == {'environment': 'asked', 'data': 'run for test', 'demo': 'run for app',
                    'train': 'run for test', 'test': 'asked', 'app': 'asked'}
    assert line == 'Asked: --only app,test; added: data, demo, train (what the steps asked need).'
    # what an earlier run left is used; a skipped step is not added
    assert gpu_check.make_plan(scratch, only=['app', 'test'])[0] == {
        'environment': 'asked', 'train': 'run for test', 'test': 'asked', 'app': 'asked'}
    plan, line = gpu_check.make_plan(empty, only=['predict'], skip=['demo'])
    assert list(plan) == ['environment', 'data', 'predict']
    assert line == 'Asked: --only predict --skip demo; added: data (what the steps asked need).'
    plan, line = gpu_check.make_plan(kit_in(tmp_path, smoke=False), skip=['tests', 'benchmark'])
    assert 'tests' not in plan and 'benchmark' not in plan and line == (
        'The default plan (every step but modes) --skip tests,benchmark.')


def test_only_and_skip_take_step_names_and_refuse_others(capsys):
    args = gpu_check.parse_args(['--only', 'demo, predict', '--skip', 'app', '--time-limit', '400'])
    assert args.only == ['demo', 'predict'] and args.skip == ['app'] and args.time_limit == 400
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(['--only', 'predict,bench'])
    assert e.value.code == 2
    assert ("argument --only: 'predict,bench': expected step names separated by commas, among "
            'environment, data, demo, determinism, train, test, predict, app, benchmark, tests, '
            'tf32, modes') in capsys.readouterr().err


def python_step(name, code, **fields):
    """A step of the kit running `code` in a fresh Python (no torch: milliseconds)."""
    fields.setdefault('limit', 60)
    return gpu_check_steps.Step(name, name, 1, command=lambda run: [sys.executable, '-c', code], **fields)


def test_steps_run_in_order_and_a_failed_late_or_impossible_step_hides_no_other(tmp_path, monkeypatch):
    """A failing step, one needing its product (skipped, saying why), one overrunning its
    limit, one whose figures cannot be read, one needing a package that is not installed: each
    is reported and the next one runs; the report is rewritten after every step."""
    steps = [python_step('first', 'print(\'{"answer": 42}\')'),
             python_step('broken', 'print("half"); raise SystemExit(3)'),
             python_step('after_broken', 'print(1)', needs=('broken',)),
             python_step('slow', 'import time; print("started", flush=True); time.sleep(60)', limit=2),
             python_step('unreadable', 'print(1)', figures=lambda run, result: {}['missing']),
             python_step('optional', 'print(1)', requires=('no_such_package_here',)),
             python_step('last', 'print(\'{"done": true}\')')]
    monkeypatch.setattr(gpu_check, 'STEPS', steps)
    monkeypatch.setattr(gpu_check, 'STEP', {s.name: s for s in steps})
    kit = kit_in(tmp_path, smoke=False)       # the steps' own limits
    run = gpu_check.Run(kit, *gpu_check.make_plan(kit))
    seen = []
    results = gpu_check.run_all(run, on_step=lambda done: seen.append([r['status'] for r in done]))
    assert [(r['name'], r['status']) for r in results] == [
        ('first', 'passed'), ('broken', 'failed'), ('after_broken', 'skipped'), ('slow', 'timed out'),
        ('unreadable', 'failed'), ('optional', 'skipped'), ('last', 'passed'), ('targets', 'skipped')]
    notes = {r['name']: r['note'] for r in results}
    assert notes['after_broken'] == 'not run: needs what the broken step makes (broken: failed)'
    assert notes['unreadable'] == "its figures could not be read: KeyError: 'missing'"
    assert notes['optional'] == ('not run: needs no_such_package_here, which is not installed (pip '
                                 'install it, or put a folder holding it on PYTHONPATH)')
    assert 'half' in results[1]['output'] and 'started' in results[3]['output']
    assert results[3]['seconds'] < 30
    assert run.figures['first'] == {'answer': 42} and run.figures['last'] == {'done': True}
    assert seen == [['passed'], ['passed', 'failed'], ['passed', 'failed', 'skipped'],
                    ['passed', 'failed', 'skipped', 'timed out'], seen[3] + ['failed'],
                    seen[3] + ['failed', 'skipped'], seen[3] + ['failed', 'skipped', 'passed']]
    # a step is not started once the run's time limit is near
    run = gpu_check.Run(kit, *gpu_check.make_plan(kit, only=['first']))
    assert gpu_check.run_all(run, time_limit=20)[0]['note'] == (
        'not run: the time limit of the whole run (--time-limit) is spent')


def tool_arguments(cmd):
    """(tool, its arguments) of a step's command: environment assignments and the Python left out."""
    words = [w for w in cmd if w != 'env' and not re.match(r'^[A-Z_]+=', w)]
    assert words[0] == sys.executable
    return (words[1:3], words[3:]) if words[1] == '-m' else (words[1], words[2:])


@pytest.mark.parametrize('smoke', [True, False], ids=['smoke', 'gpu'])
def test_every_steps_command_is_one_its_tool_accepts(scratch, smoke):
    """Each step's command line parses with its tool's own parser and its config overrides load:
    a renamed option or config key fails here, not on the next GPU."""
    kit = gpu_check_steps.Kit(scratch.out, scratch.work, smoke)
    run = gpu_check.Run(kit, *gpu_check.make_plan(kit))
    run.results['predict'] = {'status': 'passed'}
    for step in gpu_check_steps.STEPS:
        tool, argv = tool_arguments(step.command(run))
        if tool == ['-m', 'pytest']:
            assert argv[-1 if not smoke else -3] == 'tests/test_cuda.py'
        elif tool == 'tools/demo.py':
            args = demo.parse_args(argv)
            load_config(args.config, merged_opts(demo.data_opts(args.root), args.opts))
        elif tool in ('train_sccan.py', 'test_sccan.py'):
            args = (train_sccan if tool == 'train_sccan.py' else test_sccan).parse_args(argv)
            assert load_config(args.config, args.opts).layers == (14 if smoke else 50)
        elif tool == 'predict_sccan.py':
            assert len(predict_sccan.parse_args(argv).query) == 2
        elif tool == 'tools/dev/benchmark.py':
            benchmark.parse_args(argv)
        elif tool == 'tools/make_synthetic.py':
            make_synthetic.parse_args(argv)
        else:
            assert tool == gpu_check_steps.RUNS, tool
            gpu_check_runs.parse_args(argv)
    for deterministic in ('True', 'False'):
        cfg = gpu_check_runs.determinism_config(kit, 'a run', deterministic)
        assert cfg.seed_deterministic == (deterministic == 'True')
        assert (cfg.max_iters == kit.sizes.determinism_steps
                and cfg.exp_dir == kit.path('determinism', 'a_run'))
    assert load_config(gpu_check_steps.PAPER_CONFIG, kit.opts('train')).val_size == (33 if smoke else 473)


def test_determinism_is_judged_bit_for_bit(tmp_path, monkeypatch):
    """Identical: every loss, the final weights' digest and the test's figures; the default run
    gives the cost.
    The digest tells weights that compare equal but differ in a bit (-0.0 and 0.0) apart."""
    def record(name, deterministic, seconds, last_loss, digest, test_loss=0.5):
        return {'name': name, 'seed_deterministic': deterministic, 'steps': 2, 'seconds': seconds,
                'losses': [(0.5).hex(), last_loss.hex()], 'weights_sha256': digest,
                'testing': {'mIoU': (0.25).hex(), 'FB-IoU': (0.5).hex(), 'loss': test_loss.hex()}}
    runs = {'deterministic': record('deterministic', True, 3.0, 0.25, 'a'),
            'deterministic again': record('deterministic again', True, 3.1, 0.25, 'a'),
            'default': record('default', False, 2.0, 0.2500001, 'b')}
    monkeypatch.setattr(gpu_check_runs, 'one_run', lambda kit, name, deterministic: runs[name])
    figures, identical = gpu_check_runs.determinism(kit_in(tmp_path))
    assert identical and figures['identical'] and figures['time_ratio'] == 1.5
    assert figures['largest_loss_change_without'] == pytest.approx(1e-7)
    assert figures['same_weights_without'] is False
    runs['deterministic again'] = record('deterministic again', True, 3.1, 0.25, 'c')
    assert gpu_check_runs.determinism(kit_in(tmp_path))[1] is False
    runs['deterministic again'] = record('deterministic again', True, 3.1, 0.25, 'a', test_loss=0.5000001)
    assert gpu_check_runs.determinism(kit_in(tmp_path))[1] is False      # testing differs
    zero, negative_zero = {'w': torch.tensor([0.0, 1.0])}, {'w': torch.tensor([-0.0, 1.0])}
    assert torch.equal(zero['w'], negative_zero['w'])
    assert gpu_check_runs.weights_digest(zero) != gpu_check_runs.weights_digest(negative_zero)
    assert (gpu_check_runs.weights_digest(zero)
            == gpu_check_runs.weights_digest({'w': torch.tensor([0.0, 1.0])}))


@pytest.mark.parametrize('without_tf32, inside', [(0.70, True), (0.66, False)])
def test_the_tf32_evidence_is_each_miou_inside_the_others_interval(tmp_path, without_tf32, inside):
    """The tf32 step's figures, from the demo's reports with TF32 (the demo step) and without."""
    kit = kit_in(tmp_path)
    for folder, miou, interval in (('demo', 0.71, [0.69, 0.73]),
                                   ('tf32', without_tf32, [without_tf32 - 0.02, without_tf32 + 0.02])):
        write_json(gpu_check_steps.demo_report(kit, folder), {'seconds': {'training': 1.0, 'testing': 2.0}})
        write_json(gpu_check_steps.demo_output(kit, 'test_trained.json', folder),
                   {'mean': {'mIoU': miou}, 'uncertainty': {'pooled': {'mIoU': interval}}})
    run = gpu_check.Run(kit, *gpu_check.make_plan(kit))
    figures = gpu_check_steps.tf32_figures(run, {})
    assert figures['inside'] is inside
    assert figures['full_float32'] == {'mIoU': without_tf32,
                                       'interval': [without_tf32 - 0.02, without_tf32 + 0.02],
                                       'seconds': {'training': 1.0, 'testing': 2.0}}
    os.remove(gpu_check_steps.demo_output(kit, 'test_trained.json', 'tf32'))
    assert gpu_check_steps.tf32_figures(run, {}) == {}


def test_a_determinism_run_records_each_loss_and_its_weights(scratch):
    """The demo's training as the determinism step runs it, twice in this process (on a CPU,
    without deterministic algorithms, whose switch is global): the same records."""
    runs = [gpu_check_runs.train_once(scratch, 'twice', 'False')[0] for _ in range(2)]
    assert runs[0] == dict(runs[1], seconds=runs[0]['seconds'])
    assert runs[0]['steps'] == len(runs[0]['losses']) == scratch.sizes.determinism_steps
    saved = torch.load(scratch.path('determinism', 'twice', 'pascal', 'SCCAN', 'split0', 'resnet14',
                                    'snapshot', 'train_latest.pth'), weights_only=False)
    assert runs[0]['weights_sha256'] == gpu_check_runs.weights_digest(saved['state_dict'])


# ---- the report of a GPU run, from made-up figures ----------------------------------------------
def benchmark_row(setting, path, seconds, peak_gb, busy=None, **figures):
    batched = setting.startswith('eval') and path != 'reference'     # the authors ran one per call
    return {'setting': setting, 'path': path, 'episodes_per_call': 8 if batched else 1, 'seconds': seconds,
            'gflop': 100.0, 'tflops': 0.1 / seconds, 'matmul_ratio': 0.5, 'busy_fraction': busy,
            'peak_gb': peak_gb, 'reserved_gb': peak_gb + 0.5, **figures}


def gpu_benchmark():
    """What tools/dev/benchmark.py paths --reference --with-amp bf16 --no-api --json writes on a GPU
    (made up; busy_fraction where the benchmark measured it)."""
    times = {'eval-1shot': (0.02, 0.002, 0.1), 'eval-5shot': (0.03, 0.0014, 0.1),
             'train-b8': (0.045, 0.035, 0.1)}          # scripts, scripts+bf16, reference
    busy = {'eval-1shot': 0.85, 'eval-5shot': 0.5}
    rows = []
    for setting, (scripts, bf16, reference) in times.items():
        rows += [benchmark_row(setting, 'scripts', scripts, 2.0, busy.get(setting), top_kernels=[
                     {'kernel': 'sm90_xmma_gemm_bf16|tn', 'launches': 150.0, 'ms': 4.25}]),
                 benchmark_row(setting, 'scripts+bf16', bf16, 1.5),
                 benchmark_row(setting, 'reference', reference, 10.0)]
    for row in rows:
        reference = next(r for r in rows if r['setting'] == row['setting'] and r['path'] == 'reference')
        row.update(time_ratio=row['seconds'] / reference['seconds'],
                   memory_ratio=row['peak_gb'] / reference['peak_gb'])
    return {'mode': 'paths', 'header': 'device cuda (H200)', 'device': 'cuda:0', 'gpu': 'NVIDIA H200',
            'tiny': False, 'baseline': 'reference', 'matmul_bf16_tflops': 788.0, 'rows': rows}


def gpu_figures():
    """What every step of a GPU run leaves (made up)."""
    demo_results = {'trained': {'mIoU': 0.72, 'FB-IoU': 0.8}, 'untrained': {'mIoU': 0.3, 'FB-IoU': 0.5},
                    'support_blind': {'mIoU': 0.45, 'FB-IoU': 0.6}}
    return {
        'environment': {'gpus': [{'name': 'NVIDIA H200', 'memory_gb': 139.8, 'capability': '9.0'}],
                        'packages': {'tensorboardX': '2.6.2', 'gradio': None}},
        'demo': {'results': demo_results, 'checks': demo.summary(demo_results), 'episodes': 400,
                 'seconds': {'data': 0.1, 'training': 24.0, 'testing': 17.0, 'total': 42.0},
                 'checkpoint': 'ckpt.pth', 'examples': 'demo_examples.png'},
        'determinism': {'runs': [{'name': name, 'seed_deterministic': det, 'steps': 30, 'seconds': s,
                                  'losses': [(0.5).hex(), (0.25).hex()], 'weights_sha256': 'ab' * 32,
                                  'testing': {'mIoU': (0.625).hex(), 'FB-IoU': (0.75).hex(),
                                              'loss': (0.3125).hex()}}
                                 for name, det, s in (('deterministic', True, 1.5),
                                                      ('deterministic again', True, 1.5),
                                                      ('default', False, 1.0))],
                        'steps': 30, 'identical': True, 'largest_loss_change_without': 2.5e-5,
                        'same_weights_without': False, 'time_ratio': 1.5},
        'tf32': {'tf32': {'mIoU': 0.72, 'interval': [0.70, 0.74],
                          'seconds': {'training': 16.0, 'testing': 9.0}},
                 'full_float32': {'mIoU': 0.715, 'interval': [0.695, 0.735],
                                  'seconds': {'training': 21.0, 'testing': 11.0}}, 'inside': True},
        'train': {'steps': 20, 'checkpoint': 'train_latest.pth'},
        'test': {'episodes': 1000, 'seconds': 25.0, 'mIoU': 0.1, 'episodes_per_second': 40.0,
                 'rate_from': 'episodes ÷ seconds of its report', 'val_size': 473},
        'predict': {'queries': [{'query': 'syn_val_00001.jpg', 'foreground': 0.12, 'IoU': 0.8}], 'class': 2,
                    'overlay': 'predict_overlay.png'},
        'app': {'queries': 2, 'segmented': 2, 'seconds': 1.0, 'same_masks_as_predict': True,
                'page': 'not built: Gradio is not installed (pip install -r requirements-app.txt)'},
        'tests': {'records': [{'test': 'tests/test_cuda.py::'
                                       'test_golden_episodes_in_lower_precision[r50-bf16]',
                               'when': 'call', 'outcome': 'passed', 'seconds': 1.0,
                               'properties': {'argmax_agreement': 0.98}, 'message': ''}]},
        'benchmark': gpu_benchmark(),
        'modes': {'mode': 'modes', 'header': 'device cuda:0, 473×473', 'rows': [
            {'mode': 'default', 'eval_seconds': 0.1, 'eval_ratio': 1.0, 'train_seconds': 0.5,
             'train_ratio': 1.0},
            {'mode': 'bf16', 'eval_seconds': 0.05, 'eval_ratio': 0.5, 'train_seconds': 0.2,
             'train_ratio': 0.4, 'argmax_agreement': 0.97, 'max_logit_change': 0.41}]}}


def test_the_targets_are_met_missed_or_not_measured_from_the_figures():
    figures = gpu_figures()
    verdicts = gpu_check_report.target_verdicts(figures)
    assert [(what, verdict) for _, what, verdict in verdicts] == [
        ('eval-1shot, scripts: 0.20×', 'met'), ('eval-5shot, scripts: 0.30×', 'missed'),
        ('eval-1shot, scripts+bf16: 0.02×', 'met'), ('eval-5shot, scripts+bf16: 0.01×', 'met'),
        ('train-b8, scripts: 0.45×', 'met'), ('train-b8, scripts+bf16: 0.35×', 'missed'),
        ('train-b8, scripts: 0.20×', 'met'), ('train-b8, scripts+bf16: 0.15×', 'met'),
        ('eval-1shot, scripts: 0.85', 'met'), ('eval-5shot, scripts: 0.50', 'missed'),
        ('train-b8, scripts', 'not measured: tools/dev/benchmark.py reported no busy_fraction'),
        ('40.0 ÷ 50.0 episodes/s: 0.80', 'met')]
    targets = gpu_check_report.targets_result(False, figures)
    assert targets['status'] == 'failed' and targets['note'] == '8 of 11 measured met, 1 not measured'
    without_reference = dict(figures, benchmark=dict(gpu_benchmark(), baseline='scripts'), test={})
    verdicts = gpu_check_report.target_verdicts(without_reference)
    assert {v for _, _, v in verdicts[:8]} == {
        "not measured: the authors' model was not (set OFFICIAL_SCCAN to the folder holding their "
        'model/ and util/)'}
    assert verdicts[-1][2] == 'not measured: needs the test and benchmark steps of the same run'
    assert gpu_check_report.targets_result(False, {})['status'] == 'skipped'


def test_the_report_of_a_gpu_run_shows_every_steps_figures(tmp_path):
    kit = kit_in(tmp_path, smoke=False)
    run = gpu_check.Run(kit, *gpu_check.make_plan(kit))
    run.figures = gpu_figures()
    results = [gpu_check.result_of(s.name, 'passed', '', seconds=3.0, limit=s.limit)
               for s in gpu_check_steps.STEPS]
    results.append(gpu_check_report.targets_result(False, run.figures))
    report = gpu_check_report.report(run, results, 400.0, finished=True)
    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert '**Result: failed: targets.**' in report
    assert '| demo | passed | 3 | 45 | 150 |  |' in report
    assert '| (a) SCCAN, meta-trained | 0.7200 | 0.8000 |' in report
    assert '- (a) − (c) = +0.2700 mIoU (target ≥ 0.10): met' in report
    assert ('| deterministic again | True | 30 | 1.50 | 0.0500 | 0.25 | abababababababab | 0.625 | 0.3125 |'
            in report)
    assert ("**The two deterministic runs are identical bit for bit** (every loss, the final weights, the "
            "test's mIoU, FB-IoU and loss). "
            'Without determinism the losses moved by up to 2.5e-05 from the deterministic ones, the final '
            'weights differ; determinism took 1.50× the time of the same steps.') in report
    assert '| tf32: False | 0.7150 | [0.6950, 0.7350] | 21.0 | 11.0 |' in report
    assert "**Each mIoU lies inside the other run's interval**" in report
    assert ('- test_sccan.py at 473: 1000 episodes in 25.0 s, **40.0 episodes/s end to end** (data loading '
            'included; episodes ÷ seconds of its report); the model alone (benchmark eval-1shot, scripts): '
            '50.0 episodes/s, end to end 80% of it; mIoU 0.1000.') in report
    assert '| syn_val_00001.jpg | 12.0% | 0.800 |' in report
    assert ("The app (util/prediction/app.py): 2 of 2 queries segmented in 1.0 s, masks the same bytes as "
            "predict_sccan.py's; its page: not built: Gradio") in report
    assert '| eval-1shot | scripts | 0.85 | 5.0 |' in report and '| train-b8 | scripts | — | 2.2 |' in report
    assert 'against a bf16 matmul of 788 TFLOP/s in the same run' in report
    assert '| train-b8 | scripts | sm90_xmma_gemm_bf16\\|tn | 150.0 | 4.250 |' in report
    assert ('| eval-5shot | scripts | 8 | 0.0300 | 100.0 | 3.33 | 0.500 | 50 % | 2.00 | 2.50 | '
            '0.30 | 0.20 |') in report
    assert '| bf16 | 0.050 | 0.50 | 0.200 | 0.40 | 97.000 % | 4.10e-01 | — | — |' in report
    assert 'max \\|Δlogit\\|' in report                      # a | in a cell does not split it
    assert 'test_golden_episodes_in_lower_precision[r50-bf16] 98.00 %' in report
    assert ("| optional packages | tensorboardX 2.6.2, gradio NOT installed (needed by the app's page) |"
            in report)


def test_a_failing_or_overrunning_step_is_reported_and_stopped():
    failing = gpu_check.run_step('failing', [sys.executable, '-c', 'print("half"); raise SystemExit(3)'], 60)
    slow = gpu_check.run_step('slow', [sys.executable, '-c', 'import time; print("started", flush=True); '
                                       'time.sleep(120)'], 3)
    assert failing['status'] == 'failed' and 'half' in failing['output']
    assert slow['status'] == 'timed out' and 'started' in slow['output'] and slow['seconds'] < 60


@pytest.mark.parametrize('earlier', ['report.md', 'benchmark.json'])
def test_an_earlier_runs_files_are_kept_unless_overwrite_is_asked(tmp_path, earlier):
    """A folder holding an earlier run's report, or only its benchmark figures (the report
    deleted, or the run killed before writing it): refused before any step runs."""
    kept = tmp_path / earlier
    kept.write_text('figures of the only GPU run so far')
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'dev', 'gpu_check.py'), '--cpu-smoke',
                          '--out', str(tmp_path), '--work', str(tmp_path / 'work')],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f'error: {kept} exists already; pass --overwrite to replace it, or write elsewhere']
    assert kept.read_text() == 'figures of the only GPU run so far'
    assert sorted(p.name for p in tmp_path.iterdir()) == [earlier]   # no step ran


def test_each_run_gets_a_new_folder_by_default():
    args = gpu_check.parse_args([])
    assert os.path.dirname(args.out) == os.path.join(ROOT, 'exp', 'gpu_check')
    assert re.fullmatch(r'\d{8}-\d{6}', os.path.basename(args.out))        # its start, to the second
    assert args.work == os.path.join(ROOT, 'exp', 'gpu_check', 'work', 'gpu') and args.time_limit == 530
    smoke = gpu_check.parse_args(['--cpu-smoke', '--out', 'elsewhere'])
    assert smoke.out == 'elsewhere' and smoke.work.endswith(os.path.join('work', 'cpu-smoke'))


def test_without_a_visible_gpu_it_stops_at_once_pointing_to_the_cpu_smoke_run(tmp_path):
    """Not 'tests: passed' with every test skipped, then failing benchmarks, under 'GPU run'."""
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'dev', 'gpu_check.py'), '--out',
                          str(tmp_path / 'check')], capture_output=True, text=True, timeout=120,
                         env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        'error: no GPU is visible to PyTorch (torch.cuda.is_available() is False): this kit '
        'measures a GPU; tools/dev/gpu_check.sh --cpu-smoke checks the kit itself on the CPU']
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
    kit = subprocess.Popen([sys.executable, os.path.join(ROOT, 'tools', 'dev', 'gpu_check.py'), '--cpu-smoke',
                            '--only', 'tests,modes', '--out', str(out), '--work', str(tmp_path / 'work')],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
    for row in ('| environment | passed |', '| tests | interrupted |', '| modes | skipped |',
                '| targets | skipped |'):
        assert row in report
    assert '## Output of the tests step (interrupted)' in report


def test_a_steps_figures_are_its_last_json_line_even_with_lines_after_it():
    """A warning printed as the step's process exits (CUDA or NCCL teardown) must not cost its
    figures."""
    output = 'loading\n{"first": 1}\n{"steps": 30}\n[W ProcessGroupNCCL] destroy_process_group\n\n'
    assert gpu_check_steps.json_output(output) == {'steps': 30}
    assert gpu_check_steps.json_output('no figures\n[1, 2]\n') == {}


def test_the_reports_commit_comes_from_the_environment_else_git_else_unknown(monkeypatch, tmp_path):
    """A device machine may get the tree without .git, or have no git at all: the report still
    comes, naming the commit given in SCCAN_COMMIT, or 'unknown'."""
    monkeypatch.setenv('SCCAN_COMMIT', 'abc1234')
    assert gpu_check_report.git_commit() == 'abc1234'
    monkeypatch.delenv('SCCAN_COMMIT')
    monkeypatch.setenv('PATH', str(tmp_path))          # no git to be found
    assert gpu_check_report.git_commit() == 'unknown'


def test_the_benchmarks_json_holds_each_setting_as_soon_as_it_is_measured(tmp_path, monkeypatch):
    """The benchmark is the kit's last step: cut off by the time limit, it must leave the
    settings it measured in its JSON file, not nothing."""
    def measure(argv, args, setting):
        if setting == 'train-b2':
            raise KeyboardInterrupt        # as the kit's stop would end it here
        return {'scripts': {'seconds': 1.0, 'peak_gb': 1.0, 'busy_fraction': None,
                            'episodes_per_call': 1}}
    monkeypatch.setattr(benchmark, 'measure_setting', measure)
    path = tmp_path / 'b.json'
    with pytest.raises(KeyboardInterrupt):
        benchmark.main(['--tiny', '--settings', 'eval-1shot', 'train-b2', '--json', str(path)])
    with open(path) as f:
        report = json.load(f)
    assert [(row['setting'], row['path']) for row in report['rows']] == [('eval-1shot', 'scripts')]
