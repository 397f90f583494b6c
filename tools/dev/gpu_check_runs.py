"""The work the GPU kit does in processes of its own (tools/dev/gpu_check.py starts them as steps;
tools/dev/gpu_check_steps.py says which). Each prints its figures as one JSON line last and exits
with status 1 when its check fails.

    python tools/dev/gpu_check_runs.py environment
    python tools/dev/gpu_check_runs.py determinism --out DIR --work DIR [--cpu-smoke]
    python tools/dev/gpu_check_runs.py train-once NAME --deterministic {True,False} --work DIR ...
    python tools/dev/gpu_check_runs.py app --work DIR [--cpu-smoke] [--compare-with FOLDER]

environment: the GPU, driver, torch / CUDA / cuDNN versions, TF32 settings, the optional packages.
determinism: the demo's training (its config, util.training as tools/demo.py runs it) for a few
  steps, then its meta-testing on a few episodes, each run in a fresh process (a cuBLAS workspace
  is set once per process): twice with seed_deterministic True, compared bit for bit (every
  step's loss, the final weights, the test's mIoU, FB-IoU and loss), and once with it False, for
  what determinism costs in time.
app: the browser app's handlers (util/prediction/app.py, which need no Gradio) on the device: its
  example from the benchmark, segmented with the demo's checkpoint; the masks compared byte for
  byte with predict_sccan.py's (--compare-with); and the page built (tools/app.py) where Gradio is
  installed.
"""
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # up from tools/dev/
sys.path.insert(0, REPO)
from tools.dev import gpu_check_steps as steps  # noqa: E402
from util.cli import ArgumentParser, run_main  # noqa: E402
from util.files.image_io import read_bytes  # noqa: E402

DETERMINISM_RUNS = (('deterministic', True), ('deterministic again', True), ('default', False))


class RunFailed(RuntimeError):
    """A training run of the determinism step failed: its output says why."""


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('work_kind', choices=('environment', 'determinism', 'train-once', 'app'))
    p.add_argument('name', nargs='?', help='train-once: the run (a folder name)')
    p.add_argument('--out', default='')
    p.add_argument('--work', default='')
    p.add_argument('--cpu-smoke', action='store_true')
    p.add_argument('--deterministic', choices=('True', 'False'), help='train-once: seed_deterministic')
    p.add_argument('--compare-with', help="app: predict_sccan.py's output folder")
    return p.parse_args(argv)


# ---- environment --------------------------------------------------------------------------------
def environment():
    """What the report states about the machine."""
    import torch
    info = {'python': platform.python_version(), 'platform': platform.platform(),
            'torch': torch.__version__, 'cuda': torch.version.cuda,
            'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            'cpu_count': os.cpu_count(), 'cpu_threads': torch.get_num_threads(),
            'cuda_available': torch.cuda.is_available(),
            'tf32_cudnn_convolutions': torch.backends.cudnn.allow_tf32,
            'tf32_cuda_matmul': torch.backends.cuda.matmul.allow_tf32,
            'gpus': [], 'driver': nvidia_smi('driver_version'),
            'packages': {name: steps.optional_package(name) for name in steps.OPTIONAL_PACKAGES}}
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        info['gpus'].append({'name': props.name, 'memory_gb': props.total_memory / 1024 ** 3,
                             'capability': f'{props.major}.{props.minor}'})
    return info, True


def nvidia_smi(field):
    try:
        out = subprocess.run(['nvidia-smi', f'--query-gpu={field}', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f'unknown ({type(e).__name__})'
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else 'unknown'


# ---- determinism --------------------------------------------------------------------------------
def determinism(kit):
    """Three training runs of the demo, each in a fresh process; identical: the two
    deterministic ones agree bit for bit."""
    runs = [one_run(kit, name, deterministic) for name, deterministic in DETERMINISM_RUNS]
    first, again, default = runs
    identical = all(first[key] == again[key] for key in ('losses', 'weights_sha256', 'testing'))
    return {'runs': runs, 'steps': first['steps'], 'identical': identical,
            'largest_loss_change_without': max(abs(float.fromhex(a) - float.fromhex(b)) for a, b in
                                               zip(first['losses'], default['losses'])),
            'same_weights_without': first['weights_sha256'] == default['weights_sha256'],
            'time_ratio': first['seconds'] / default['seconds']}, identical


def one_run(kit, name, deterministic):
    cmd = [sys.executable, __file__, 'train-once', name, '--deterministic', str(deterministic),
           *kit.argv()]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RunFailed(f'the training run "{name}" failed (exit status {out.returncode}):\n'
                           f'{out.stdout[-2000:]}{out.stderr[-4000:]}')
    return steps.json_output(out.stdout)


def train_once(kit, name, deterministic):
    """Train the demo's config for the kit's few steps (util.training.Trainer, as tools/demo.py
    trains), then meta-test the result on the kit's few episodes (as test_sccan.py does); every
    step's loss and the test's figures (as float.hex), the final weights' digest and the seconds
    of the steps (fit: data loading included, set-up not)."""
    from util import distributed
    from util.evaluation.checkpoint_evaluation import evaluate_checkpoint
    from util.training import Trainer
    cfg = determinism_config(kit, name, deterministic)
    losses = []
    with distributed.process_group() as env:
        trainer = Trainer(cfg, env, overwrite=True)
        step = trainer.step

        def recorded(*args):
            losses.append(step(*args))
            return losses[-1]
        trainer.step = recorded
        try:
            start = time.perf_counter()
            trainer.fit()
            seconds = time.perf_counter() - start
        finally:
            trainer.close()
        report = evaluate_checkpoint(cfg, env, trainer.paths.latest,
                                     episodes=kit.sizes.determinism_episodes, overwrite=True)
    tested = report['seeds'][0]
    return {'name': name, 'seed_deterministic': deterministic == 'True', 'steps': len(losses),
            'seconds': seconds, 'losses': [loss.hex() for loss in losses],
            'weights_sha256': weights_digest(trainer.net.state_dict()),
            'testing': {key: float(tested[key]).hex() for key in ('mIoU', 'FB-IoU', 'loss')}}, True



def determinism_config(kit, name, deterministic):
    """The demo's config for a few steps with seed_deterministic `deterministic` ('True' or
    'False'), training in its own folder."""
    from util.config import load_config
    return load_config(steps.DEMO.config, kit.opts(
        os.path.join('determinism', name.replace(' ', '_')), 'seed_deterministic', deterministic,
        'max_iters', str(kit.sizes.determinism_steps)))


def weights_digest(state_dict):
    """SHA-256 of a state dict's names, dtypes, shapes and bytes: equal digests, the same
    weights bit for bit."""
    import torch
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f'{name} {tensor.dtype} {tuple(tensor.shape)}'.encode())
        digest.update(tensor.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---- the app ------------------------------------------------------------------------------------
def app(kit, compare_with):
    """The app's example segmented on the device; passed: every query segmented, with the masks
    of predict_sccan.py where they are given."""
    from util.prediction.app import SegmentationApp, SupportSlot
    segmenter = SegmentationApp(kit.path('app'), device=kit.device)
    support, mask, queries = segmenter.synthetic_example(kit.data, queries=2)
    start = time.perf_counter()
    result = segmenter.run(steps.demo_checkpoint(kit), [SupportSlot(image=support, mask=mask)], queries)
    seconds = time.perf_counter() - start
    masks = [path for path in result.downloads if path.endswith('_mask.png')]
    same = None
    if compare_with:
        theirs = [os.path.join(compare_with, os.path.basename(path)) for path in masks]
        same = len(masks) == len(queries) and all(
            os.path.isfile(other) and read_bytes(other) == read_bytes(ours)
            for ours, other in zip(masks, theirs))
    figures = {'messages': result.messages, 'queries': len(queries), 'segmented': len(result.overlays),
               'seconds': seconds, 'same_masks_as_predict': same, 'page': built_page(kit, segmenter)}
    return figures, figures['segmented'] == len(queries) and same is not False


def built_page(kit, segmenter):
    """'built' when Gradio builds the app's page (tools/app.py, not served), else why not."""
    version = steps.optional_package('gradio')
    if version is None:
        return 'not built: Gradio is not installed (pip install -r requirements-app.txt)'
    from tools import app as app_tool
    app_tool.build_page(app_tool.import_gradio(), segmenter, kit.path('demo'), kit.data)
    return f'built (Gradio {version})'


def main(argv=None):
    args = parse_args(argv)
    kit = steps.Kit(os.path.abspath(args.out), os.path.abspath(args.work), args.cpu_smoke)
    if args.work_kind == 'environment':
        figures, ok = environment()
    elif args.work_kind == 'determinism':
        figures, ok = determinism(kit)
    elif args.work_kind == 'train-once':
        figures, ok = train_once(kit, args.name, args.deterministic)
    else:
        figures, ok = app(kit, args.compare_with)
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(run_main(main, (RunFailed, 'error', 2)))
