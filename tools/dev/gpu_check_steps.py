"""The steps of the GPU kit (tools/dev/gpu_check.py runs them, in this order): what each runs, the
steps whose products it reads, its time on one GPU, and the figures it leaves.

  environment  the GPU, driver, torch / CUDA / cuDNN, TF32 settings, the optional packages
  data         the demo's synthetic benchmark, written once by all the cores
               (tools/make_synthetic.py --processes) for every step below that reads it
  demo         `make demo` (tools/demo.py) on the device: its targets, figures and time
  determinism  the demo's training, a few steps, and its testing, twice with seed_deterministic
               True (identical bit for bit?) and once without (what determinism costs)
  train        train_sccan.py for a few steps: the paper's model and recipe at 473, on the benchmark
  test         test_sccan.py on that checkpoint at 473, end to end (data loading included)
  predict      predict_sccan.py on two of the benchmark's images with the demo's checkpoint
  app          the browser app's segmentation (util/prediction/app.py) of the same images; its
               page too where Gradio is installed
  benchmark    tools/dev/benchmark.py paths: eval 1-shot and 5-shot, a training step at batch 8; float32
               and bf16; the authors' model when OFFICIAL_SCCAN is set
  tests        pytest -m cuda (tests/test_cuda.py) on the device
  tf32         `make demo` again with tf32: False: its mIoU against the demo step's (TF32 on), for
               the default of the tf32 key
  modes        tools/dev/benchmark.py modes (not in a GPU run's default plan: about 2 minutes)

The kit's scratch folder (--work) holds the benchmark, the checkpoints and what the scripts
write; a step's own outputs there are removed before it runs, so that its figures are its own.
"""
import dataclasses
import functools
import json
import os
import shutil
import sys
from typing import Callable, Optional, Sequence

DEV = os.path.dirname(os.path.abspath(__file__))     # tools/dev
REPO = os.path.dirname(os.path.dirname(DEV))
sys.path.insert(0, REPO)
from tools import demo  # noqa: E402  (its defaults, its data options)
from util.config import load_config  # noqa: E402
from util.datasets import SYNTHETIC_LISTS  # noqa: E402
from util.datasets.synthetic import is_generated  # noqa: E402
from util.files.checks import unique_stems  # noqa: E402
from util.files.image_io import IGNORE_LABEL, read_bytes, read_label  # noqa: E402
from util.files.run_paths import RunPaths  # noqa: E402
from util.files.writer import write_atomic  # noqa: E402
from util.lists import read_list  # noqa: E402
from util.prediction.app import EXAMPLE_CLASS, SegmentationApp  # noqa: E402

PYTHON = sys.executable
RUNS = os.path.join(DEV, 'gpu_check_runs.py')           # the work the kit does in its own processes
DEMO = demo.parse_args([])                              # the demo's defaults: config, seed, images
PAPER_CONFIG = os.path.join(REPO, 'config', 'pascal', 'pascal_split0_resnet50.yaml')
SMOKE_LIMIT = 300            # seconds per step of a CPU smoke run (a loaded machine)
BENCHMARK_SETTINGS = ['eval-1shot', 'eval-5shot', 'train-b8']
# The tests the CPU smoke run selects (`pytest -k`): one that records figures, one that skips.
SMOKE_TESTS = 'plain_path and fused_attention or steps and fp16'


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each step does: a GPU run's sizes, or a CPU smoke run's."""
    images: tuple             # the benchmark's training and validation images
    determinism_steps: int    # training steps of each determinism run
    determinism_episodes: int  # test episodes after each determinism run
    train_steps: int          # train_sccan.py's steps
    test_episodes: int        # test_sccan.py's episodes
    model: tuple = ()         # config overrides of the model and its loaders
    demo: tuple = ()          # tools/demo.py's options besides its data


GPU_SIZES = Sizes(images=(DEMO.train_images, DEMO.val_images), determinism_steps=30,
                  determinism_episodes=200, train_steps=20, test_episodes=1000)
# the tiny model at 33×33; 60 training images give each base class of fold 0 two, and 48 validation
# images hold 3 of the app's example class
SMOKE_SIZES = Sizes(images=(60, 48), determinism_steps=2, determinism_episodes=4, train_steps=2,
                    test_episodes=4,
                    model=('model', 'tiny', 'train_h', '33', 'train_w', '33', 'val_size', '33',
                           'workers', '0', 'batch_size', '4'),
                    demo=('--examples', '2'))


@dataclasses.dataclass(frozen=True)
class Kit:
    """Where one run of the kit writes: its report's folder `out` (report.md and FIGURE_FILES)
    and its scratch folder `work`; `smoke`: a CPU smoke run."""
    out: str
    work: str
    smoke: bool = False

    @property
    def sizes(self) -> Sizes:
        return SMOKE_SIZES if self.smoke else GPU_SIZES

    @property
    def device(self) -> str:
        return 'cpu' if self.smoke else 'cuda'

    @property
    def data(self) -> str:
        return self.path('synthetic')

    def path(self, *parts) -> str:
        """A path in the scratch folder."""
        return os.path.join(self.work, *parts)

    def figure_file(self, name) -> str:
        return os.path.join(self.out, name)

    def argv(self) -> list:
        """This kit on the command line of tools/dev/gpu_check_runs.py."""
        return ['--out', self.out, '--work', self.work] + (['--cpu-smoke'] if self.smoke else [])

    def opts(self, exp_dir, *more) -> list:
        """Config overrides of a run on the benchmark: its data and list cache, its exp_dir in
        the scratch folder, no ImageNet weights (the kit downloads nothing), the sizes of the
        mode, then `more`."""
        return [*demo.data_opts(self.data), 'list_dir', self.path('lists'), 'exp_dir',
                self.path(exp_dir), 'backbone_weights', 'None', *self.sizes.model, *more]

    def environment(self) -> dict:
        """The steps' environment: a smoke run hides any GPU (the CPU is what it checks) and
        computes with one thread (its tiny sizes gain nothing from more, a shared machine
        loses much)."""
        smoke = {'CUDA_VISIBLE_DEVICES': '', 'OMP_NUM_THREADS': '1'} if self.smoke else {}
        return {**os.environ, **smoke}


# The optional packages the report names, with what needs them.
OPTIONAL_PACKAGES = {'tensorboardX': 'training (util/log.py)', 'gradio': "the app's page",
                     'pycocotools': 'tools/prepare_coco.py', 'matplotlib': 'test_sccan.py --plot'}

# Files the steps leave in the report's folder besides report.md (the folder comes back from a
# GPU machine whole: a few files, no subfolders).
FIGURE_FILES = ('figures.json', 'tests.jsonl', 'benchmark.json', 'modes.json', 'demo_examples.png',
                'predict_overlay.png')


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of the kit.

    Attributes:
        name, does: its name (--only, --skip) and what it does, in a few words.
        budget: its seconds on one H200 in the default plan (6.5 minutes in all).
        limit: the seconds it may run on a GPU (SMOKE_LIMIT on a CPU).
        command: (run) → argv, run from the repository root; `run` is the kit's Run (its kit and
            the steps done so far).
        figures: (run, result) → the figures its outputs hold, read after it ended.
        needs: steps whose products it reads.
        product: (kit) → what it leaves for the steps after it (a path), or None.
        reusable: its product, left by an earlier run, is used instead of running it.
        requires: optional packages it cannot run without.
        default: in a GPU run's plan without --only (a CPU smoke run runs every step).
        outputs: (kit) → paths removed before it runs, so that its figures are its own.
        verdict: (run, status, figures) → (status, note): its status from that of its exit
            (`status`) and its figures.
    """
    name: str
    does: str
    budget: int
    limit: int
    command: Callable
    figures: Callable = lambda run, result: json_output(result['output'])
    needs: Sequence[str] = ()
    product: Callable = lambda kit: None
    reusable: bool = False
    requires: Sequence[str] = ()
    default: bool = True
    outputs: Callable = lambda kit: []
    verdict: Callable = lambda run, status, figures: (status, None)


def json_output(output):
    """The JSON object a step printed last, or {}: the last line that is one (a warning printed
    at the process's exit may follow it)."""
    for line in reversed(output.strip().splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
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


def copy_figure(source, kit, name):
    """`source` copied to the report's folder as `name`; the name, or None without a source."""
    if not os.path.isfile(source):
        return None
    write_atomic(kit.figure_file(name), read_bytes(source))
    return name


def existing(path):
    return path if os.path.isfile(path) else None


# ---- data ---------------------------------------------------------------------------------------
def data_command(run):
    train, val = run.kit.sizes.images
    return [PYTHON, 'tools/make_synthetic.py', '--root', run.kit.data, '--seed', str(DEMO.seed),
            '--train', str(train), '--val', str(val), '--processes', str(os.cpu_count() or 1)]


def benchmark_written(kit):
    return kit.data if is_generated(kit.data, DEMO.seed, *kit.sizes.images) else None


def data_figures(run, result):
    train, val = run.kit.sizes.images
    return {'images': train + val, 'processes': os.cpu_count() or 1, 'root': run.kit.data}


# ---- demo ---------------------------------------------------------------------------------------
def demo_output(kit, name, folder='demo'):
    """File `name` of tools/demo.py's output (<exp_dir>/demo/), its run in the scratch folder
    `folder`."""
    return kit.path(folder, 'demo', name)


def demo_report(kit, folder='demo'):
    return demo_output(kit, 'report.json', folder)


def demo_command(run, folder='demo', opts=()):
    """tools/demo.py on the kit's benchmark, its run in the scratch folder `folder`, with the
    config overrides `opts`."""
    kit = run.kit
    train, val = kit.sizes.images
    return [PYTHON, 'tools/demo.py', '--root', kit.data, '--seed', str(DEMO.seed), '--train-images',
            str(train), '--val-images', str(val), *kit.sizes.demo, '--opts', 'exp_dir',
            kit.path(folder), 'list_dir', kit.path('lists'), *kit.sizes.model,
            *(['test_num', '4', 'max_iters', '2'] if kit.smoke else []), *opts]


def demo_checkpoint(kit):
    """The checkpoint the demo trained, once it has reported."""
    report = read_json(demo_report(kit)) or {}
    return existing(report.get('checkpoint') or '')


def demo_figures(run, result):
    report = read_json(demo_report(run.kit))
    if report is None:
        return {}
    examples = copy_figure(demo_output(run.kit, 'examples.png'),
                           run.kit, 'demo_examples.png')
    return {'results': {name: {m: r[m] for m in ('mIoU', 'FB-IoU')} for name, r in report['results'].items()},
            'checks': report['checks'], 'seconds': report['seconds'], 'episodes': report['episodes'],
            'checkpoint': report['checkpoint'], 'examples': examples}


# ---- TF32 ---------------------------------------------------------------------------------------
def tf32_figures(run, result):
    """The demo's trained model scored with TF32 (the demo step, tf32: True, the default) and
    without (this step): mIoU, its 95 % interval and the seconds of each; `inside`: each mIoU
    lies in the other's interval, the evidence on which the default stands."""
    runs = {}
    for name, folder in (('tf32', 'demo'), ('full_float32', 'tf32')):
        report = read_json(demo_report(run.kit, folder))
        tested = read_json(demo_output(run.kit, 'test_trained.json', folder))
        if not report or not tested:
            return {}
        runs[name] = {'mIoU': tested['mean']['mIoU'], 'interval': tested['uncertainty']['pooled']['mIoU'],
                      'seconds': report['seconds']}
    on, off = runs['tf32'], runs['full_float32']
    return {**runs, 'inside': (on['interval'][0] <= off['mIoU'] <= on['interval'][1]
                               and off['interval'][0] <= on['mIoU'] <= off['interval'][1])}


def demo_verdict(run, status, figures):
    """The demo exits 1 when its targets are missed: meaningless for the tiny model of a smoke
    run, where its report is what counts (the demo's figures, or the tf32 step's)."""
    if run.kit.smoke and status == 'failed' and figures:
        return 'passed', 'targets not asserted: the tiny model, 2 steps'
    return status, None


# ---- train_sccan.py and test_sccan.py at the paper's size ---------------------------------------
def train_opts(kit):
    return kit.opts('train', 'epochs', '1', 'max_iters', str(kit.sizes.train_steps), 'evaluate', 'False')


def train_command(run):
    return [PYTHON, 'train_sccan.py', '--config', PAPER_CONFIG, '--overwrite', '--opts',
            *train_opts(run.kit)]


def train_checkpoint_path(kit):
    return RunPaths.of(load_config(PAPER_CONFIG, train_opts(kit))).latest


def train_figures(run, result):
    import torch
    path = existing(train_checkpoint_path(run.kit))
    if path is None:
        return {}
    checkpoint = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    return {'checkpoint': path, 'steps': checkpoint['iteration']}


def test_report(kit):
    return kit.path('test', 'report.json')


def test_command(run):
    kit = run.kit
    return [PYTHON, 'test_sccan.py', '--config', PAPER_CONFIG, '--weight', train_checkpoint_path(kit),
            '--episodes', str(kit.sizes.test_episodes), '--out', test_report(kit), '--overwrite',
            '--opts', *kit.opts('train')]


def test_figures(run, result):
    report = read_json(test_report(run.kit))
    if report is None:
        return {}
    seed = report['seeds'][0]
    rate = seed.get('episodes_per_second') or report.get('episodes_per_second')
    return {'episodes': seed['episodes'], 'seconds': seed['seconds'], 'mIoU': seed['mIoU'],
            'episodes_per_second': rate or seed['episodes'] / seed['seconds'],
            'rate_from': "test_sccan.py's report" if rate else 'episodes ÷ seconds of its report',
            'val_size': load_config(PAPER_CONFIG, run.kit.opts('train')).val_size}


# ---- predict_sccan.py and the app ---------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def example(kit):
    """(support image, its mask, [two query images]): the browser app's example from the
    benchmark (util.prediction.app), copied to the scratch folder."""
    return SegmentationApp(kit.path('example')).synthetic_example(kit.data, queries=2)


def predict_folder(kit):
    return kit.path('predict')


def predict_command(run):
    kit = run.kit
    support, mask, queries = example(kit)
    return [PYTHON, 'predict_sccan.py', '--weight', demo_checkpoint(kit), '--support', support, mask,
            '--query', *queries, '--out', predict_folder(kit), '--overwrite', '--device', kit.device]


def predicted_masks(kit):
    """The mask files predict_sccan.py writes for the example's queries, in their order."""
    queries = example(kit)[2]
    return [os.path.join(predict_folder(kit), f'{stem}_mask.png') for stem in unique_stems(queries)]


def ground_truth(kit, image):
    """The label file of one of the benchmark's validation images, by its name."""
    labels = {os.path.basename(img): lab for img, lab in
              read_list(os.path.join(kit.data, SYNTHETIC_LISTS['val']))}
    return os.path.join(kit.data, labels[os.path.basename(image)])


def predict_figures(run, result):
    kit = run.kit
    rows = []
    for query, mask in zip(example(kit)[2], predicted_masks(kit)):
        if not os.path.isfile(mask):
            continue
        label = read_label(ground_truth(kit, query))
        predicted, target, scored = read_label(mask) > 0, label == EXAMPLE_CLASS, label != IGNORE_LABEL
        union = ((predicted | target) & scored).sum()
        rows.append({'query': os.path.basename(query), 'foreground': float(predicted.mean()),
                     'IoU': float((predicted & target & scored).sum() / union) if union else None})
    overlay = copy_figure(predicted_masks(kit)[0].replace('_mask.png', '_overlay.png'), kit,
                          'predict_overlay.png')
    return {'queries': rows, 'class': EXAMPLE_CLASS, 'overlay': overlay}


def app_command(run):
    compare = ['--compare-with', predict_folder(run.kit)] if run.passed('predict') else []
    return [PYTHON, RUNS, 'app', *run.kit.argv(), *compare]


# ---- tests, benchmark, modes --------------------------------------------------------------------
def tests_command(run):
    """pytest -m cuda, a JSON line per test (SCCAN_TEST_LOG, tests/conftest.py: a timed-out run
    still reports what finished); on the CPU (smoke) two of them."""
    kit = run.kit
    return ['env', f'SCCAN_TEST_LOG={kit.figure_file("tests.jsonl")}',
            *(['SCCAN_CUDA_TESTS_DEVICE=cpu'] if kit.smoke else []),
            PYTHON, '-m', 'pytest', '-q', '-m', 'cuda', '-p', 'no:cacheprovider', 'tests/test_cuda.py',
            *(['-k', SMOKE_TESTS] if kit.smoke else [])]


def benchmark_command(run):
    kit = run.kit
    cmd = [PYTHON, 'tools/dev/benchmark.py', 'paths', '--with-amp', 'bf16', '--no-api',
           '--json', kit.figure_file('benchmark.json')]
    if kit.smoke:
        return cmd + ['--device', 'cpu', '--tiny', '--settings', 'eval-1shot']
    return cmd + ['--device', 'cuda', '--settings', *BENCHMARK_SETTINGS] + (
        ['--reference'] if os.environ.get('OFFICIAL_SCCAN') else [])


def modes_command(run):
    kit = run.kit
    cmd = [PYTHON, 'tools/dev/benchmark.py', 'modes', '--json', kit.figure_file('modes.json')]
    if kit.smoke:
        return cmd + ['--device', 'cpu', '--tiny', '--modes', 'fused_attention']
    # The defaults on CUDA hold fused attention and no recomputation: the other two measure them.
    # compile last: its first calls compile the model for eval and training (their time is a
    # column of the table), which may take minutes.
    return cmd + ['--device', 'cuda', '--modes', 'contiguous', 'plain_attention', 'recompute',
                  'bf16', 'fp16', 'compile']


def figure_json(name):
    return lambda run, result: read_json(run.kit.figure_file(name)) or {}


def in_work(*parts):
    return lambda kit: [kit.path(*parts)]


def in_out(name):
    return lambda kit: [kit.figure_file(name)]


# Budgets: the first GPU run (one H200) took 69 s for the demo with 35 s of it writing the data in
# one process, 11 s for the CUDA training-loop tests, about 140 s for the benchmark with the api
# path and 110 s for the modes; the rest are estimates, to be replaced by the kit's own report.
TENSORBOARD = ('tensorboardX',)        # util/log.py's writer: every training run needs it
STEPS = [
    Step('environment', 'the machine, the versions, the optional packages', 5, 30,
         lambda run: [PYTHON, RUNS, 'environment']),
    Step('data', "the demo's benchmark, written by every core", 5, 60, data_command, data_figures,
         product=benchmark_written, reusable=True),
    Step('demo', 'make demo on the device', 45, 150, demo_command, demo_figures, needs=('data',),
         product=demo_checkpoint, requires=TENSORBOARD, outputs=in_work('demo'), verdict=demo_verdict),
    Step('determinism', "the demo's training and testing twice with seed_deterministic, once without",
         30, 90,
         lambda run: [PYTHON, RUNS, 'determinism', *run.kit.argv()], needs=('data',),
         requires=TENSORBOARD, outputs=in_work('determinism')),
    Step('train', "train_sccan.py, the paper's model at 473, a few steps", 15, 90, train_command,
         train_figures, needs=('data',), product=lambda kit: existing(train_checkpoint_path(kit)),
         requires=TENSORBOARD, outputs=in_work('train')),
    Step('test', 'test_sccan.py at 473, end to end', 25, 120, test_command, test_figures,
         needs=('data', 'train'), outputs=in_work('test')),
    Step('predict', "predict_sccan.py on two images, the demo's checkpoint", 6, 60, predict_command,
         predict_figures, needs=('data', 'demo'), outputs=in_work('predict')),
    Step('app', "the browser app's segmentation of the same images", 6, 60, app_command,
         needs=('data', 'demo'), outputs=in_work('app')),
    # before the tests, whose Inductor compiling takes a time no CPU run tells: when a run runs
    # short, the figures the speed targets need are in already
    Step('benchmark', "speed and memory: eval, training, the authors' model", 115, 170,
         benchmark_command, figure_json('benchmark.json'), outputs=in_out('benchmark.json')),
    Step('tests', 'pytest -m cuda on the device', 100, 180, tests_command,
         lambda run, result: {'records': read_jsonl(run.kit.figure_file('tests.jsonl'))},
         outputs=in_out('tests.jsonl')),
    # the evidence for the tf32 default (issue #32): last, so that it is what a short run skips
    Step('tf32', 'make demo with tf32: False, against the demo step (TF32 on)', 40, 120,
         lambda run: demo_command(run, 'tf32', ('tf32', 'False')), tf32_figures, needs=('data', 'demo'),
         requires=TENSORBOARD, outputs=in_work('tf32'), verdict=demo_verdict),
    Step('modes', 'each fast mode against the default', 200, 420, modes_command,
         figure_json('modes.json'), default=False, outputs=in_out('modes.json')),
]
STEP = {step.name: step for step in STEPS}


def remove_outputs(step, kit):
    for path in step.outputs(kit):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def optional_package(name) -> Optional[str]:
    """Its version when it is installed, else None (without importing it)."""
    import importlib.metadata
    import importlib.util
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return 'installed'
