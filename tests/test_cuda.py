"""What only a GPU can show (marker `cuda`): the golden episodes on the device, training steps in
float32, bf16 and fp16, the fast paths and torch.compile against the plain path, a torchrun
(NCCL) step against one process, the evaluation feature cache on the device, evaluation from CUDA
graphs and in batches against eager one by one, and the training loop, resumption and
meta-testing end to end. tools/dev/gpu_check.sh runs them and puts the figures
they record (record_property) in its report.

Without CUDA (or with SCCAN_CUDA_TESTS_DEVICE=cpu) they run on the CPU, in every `make test`, so
that no code only a GPU runs can rot unseen: the same bodies at sizes a CPU runs in seconds
(`on_device`: the smallest golden episode, fewer attention windows, a smaller training run, one
torchrun process through Gloo, TorchDynamo's graphs without Inductor's kernel builds). Skipped
there, each saying why: what needs CUDA itself (fp16 with loss scaling, TF32, features kept on
the host apart from the device), bf16 autocast of the paper's network (8x float32's time on CPUs
without bf16 units; bf16 runs at the tiny size) and the float64 golden logits (on the CPU,
tests/test_golden.py's).

Float32 comparisons run with TF32 off (`exact_float32`): PyTorch lets cuDNN convolutions round
to TF32 by default, which would hide a real difference between two paths.
"""
import contextlib
import copy
import functools
import glob
import importlib
import math
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from helpers import (assert_same_step, check_cached_evaluation, evaluations_in_batches, make_pascal_config,
                     validate_and_step)
from model import build_sccan
from model.scca import WindowAttention
from tools.demo import data_opts
from tools.dev.random_episodes import random_episode
from util import distributed
from util.config import default_config, load_config
from util.episodes import TRAINING_INPUTS
from util.experiment import compile_model, ready_model
from util.optim import build_optimizers, forward_backward, optimizer_step, set_sgd_lr
from util.precision import Precision, precision_for
from util.seeding import without_dropout
from util.training import train
from util.datasets.synthetic import write_benchmark
from util.evaluation.checkpoint_evaluation import evaluate_checkpoint
from util.evaluation.replay import call_on_buffers, capture_cuda_graph, replayed_forward
from util.prediction.predictor import FewShotSegmenter

pytestmark = pytest.mark.cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_ENV = 'SCCAN_CUDA_TESTS_DEVICE'
GOLDEN_DIR = os.path.join(ROOT, 'tests', 'golden')


ON_GPU = torch.cuda.is_available() and os.environ.get(DEVICE_ENV) != 'cpu'


def on_device(gpu, cpu):
    """`gpu` where these tests run on a GPU; `cpu` where they run on the CPU, within the time of
    the whole suite (make test)."""
    return gpu if ON_GPU else cpu


def gpu_only(reason):
    """A mark that skips a test or a parameter on the CPU, saying why."""
    return pytest.mark.skipif(not ON_GPU, reason=reason)


FP16 = pytest.param('fp16', marks=gpu_only('fp16 autocast with loss scaling runs on CUDA only '
                                           '(util.precision)'))


@pytest.fixture(scope='module')
def device():
    return torch.device('cuda', torch.cuda.current_device()) if ON_GPU else torch.device('cpu')


@contextlib.contextmanager
def tf32(allowed):
    """TF32 for cuDNN convolutions and CUDA matmuls on or off inside (no effect on CPUs)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def exact_float32():
    with tf32(False):
        yield


PLAIN = dict(channels_last=False, recompute=False, fused_attention=False)


def tiny_twins(first, second):
    """Two tiny SCCANs with the same weights and no dropout, their fast paths switched as
    `first` and `second` say (SCCAN.set_fast_paths; {}: the defaults)."""
    torch.manual_seed(0)
    nets = [without_dropout(build_sccan('tiny')).set_fast_paths(**paths) for paths in (first, second)]
    nets[1].load_state_dict(nets[0].state_dict())
    return nets


def loss_and_gradients(net, inputs):
    _, loss = net.train()(*inputs)
    net.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}


def compare_outputs_and_gradients(a, b, device, record_property):
    """Eval logits and training gradients of two SCCANs on one 2-shot batch: records and checks
    the largest logit change and the largest relative change of a parameter's gradient."""
    inputs = [t.to(device) for t in random_episode(b=2, k=2, size=33, seed=3)]
    with torch.no_grad():
        logits_a, logits_b = a.eval()(*inputs[:3]), b.eval()(*inputs[:3])
    (_, grads_a), (_, grads_b) = loss_and_gradients(a, inputs), loss_and_gradients(b, inputs)
    logit_change = (logits_a - logits_b).abs().max().item()
    gradient_change = max(((grads_a[n] - grads_b[n]).norm() / grads_a[n].norm().clamp_min(1e-30)).item()
                          for n in grads_a)
    record_property('max_abs_logit_change', logit_change)
    record_property('max_relative_gradient_change', gradient_change)
    assert logit_change <= 1e-4 and torch.equal(logits_a.argmax(1), logits_b.argmax(1))
    assert grads_a.keys() == grads_b.keys() and gradient_change <= 1e-4


# ---- golden episodes (the authors' code, float64) -----------------------------------------------
def golden_module():
    """tools/dev/golden.py (weights and inputs of the golden episodes), when it and tests/golden/
    are there."""
    path = os.path.join(ROOT, 'tools', 'dev', 'golden.py')
    if not os.path.isfile(path) or not glob.glob(os.path.join(GOLDEN_DIR, '*.pt')):
        return None
    return importlib.import_module('tools.dev.golden')


GOLDEN = golden_module()
# On the CPU, the smallest episode.
GOLDEN_CASES = (on_device(sorted(GOLDEN.CASES), ['r50_1shot_57']) if GOLDEN else
                [pytest.param(None, marks=pytest.mark.skip(reason='no golden episodes: tools/dev/golden.py '
                                                                  'and tests/golden/ are absent'))])


@functools.lru_cache(maxsize=None)
def golden_net(name):
    """Our SCCAN for golden case `name` with its weights, on the CPU; built once (a ResNet-101
    takes seconds to initialise), copied for each use."""
    return GOLDEN.golden_model(GOLDEN.CASES[name])


def golden_logits(name, device, dtype, precision):
    """(our logits of golden case `name`, the authors'), float64 on the CPU."""
    net = copy.deepcopy(golden_net(name)).to(device, dtype)
    inputs = GOLDEN.episode_inputs(GOLDEN.CASES[name])
    with torch.no_grad(), precision.autocast():
        logits = net(*(inputs[k].to(device, dtype) for k in ('query', 'support', 'support_masks')))
    expected = torch.load(os.path.join(GOLDEN_DIR, f'{name}.pt'), map_location='cpu', weights_only=True)
    return logits.double().cpu(), expected['logits']


@pytest.mark.paper_size
@gpu_only("on the CPU these float64 logits are tests/test_golden.py test_logits_match's; "
          'golden_logits runs here in float32')
@pytest.mark.parametrize('name', GOLDEN_CASES)
def test_golden_episodes_in_float64(device, name, record_property):
    # float64 attention runs on SDPA's math kernel (flash and memory-efficient ones have none)
    ours, theirs = golden_logits(name, device, torch.float64, Precision(device.type))
    change = (ours - theirs).abs().max().item()
    record_property('max_abs_logit_change', change)
    assert change <= 1e-8


# name: (autocast dtype, TF32 allowed: None leaves PyTorch's default, on for cuDNN convolutions)
LOWER_PRECISIONS = {'float32': (None, False), 'float32-default-tf32': (None, None),
                    'bf16': (torch.bfloat16, None)}
ON_THE_CPU = {   # why a lower precision is not run on the CPU
    'float32-default-tf32': gpu_only('TF32 rounds on CUDA devices only: on the CPU this is the float32 case'),
    'bf16': gpu_only("bf16 autocast of the paper's network takes 8x float32's time on CPUs without "
                     'bf16 units: on the CPU the float32 case runs this body, and bf16 autocast runs '
                     'at the tiny size (test_training_steps_lower_the_loss_on_a_fixed_batch)'),
}


@pytest.mark.parametrize('precision', [pytest.param(name, marks=ON_THE_CPU.get(name, ()))
                                       for name in LOWER_PRECISIONS])
@pytest.mark.paper_size
@pytest.mark.parametrize('name', GOLDEN_CASES)
def test_golden_episodes_in_lower_precision(device, name, precision, record_property):
    """float32 must agree with the authors' float64 logits. TF32 convolutions (PyTorch's default)
    and bf16 autocast are reported and bounded: on the CPU, bf16 moved logits by 0.38–0.49 and
    kept 92.8–99.9 % of the argmax (the ResNet-101 episode, with random weights and small
    margins, the lowest); bf16 must also change them more than float32 may, or it did not run."""
    autocast_dtype, allow_tf32 = LOWER_PRECISIONS[precision]
    with tf32(allow_tf32) if allow_tf32 is not None else contextlib.nullcontext():
        ours, theirs = golden_logits(name, device, torch.float32, Precision(device.type, autocast_dtype))
    agreement = (ours.argmax(1) == theirs.argmax(1)).double().mean().item()
    change = (ours - theirs).abs().max().item()
    record_property('argmax_agreement', agreement)
    record_property('max_abs_logit_change', change)
    float32_bound = 1e-3
    if precision == 'float32':
        assert agreement >= 0.999 and change <= float32_bound
    else:
        assert agreement >= 0.9 and change <= 1.0
    if precision == 'bf16':
        assert change > float32_bound


# ---- training steps -----------------------------------------------------------------------------
@pytest.mark.parametrize('amp', ['none', 'bf16', FP16])
def test_training_steps_lower_the_loss_on_a_fixed_batch(device, amp, record_property):
    """Six steps of train_sccan.py's step (SGD + AdamW, one GradScaler for both) on one batch."""
    cfg = default_config().replace(model='tiny', amp=amp)
    precision = precision_for(cfg, device)
    torch.manual_seed(0)
    net = without_dropout(ready_model(cfg, device)).train()
    sgd, adamw = build_optimizers(net, cfg)
    set_sgd_lr(sgd, cfg.base_lr)
    scaler = precision.grad_scaler()
    batch = dict(zip(TRAINING_INPUTS, random_episode(b=2, size=33)))
    losses = []
    for _ in range(6):
        losses.append(forward_backward(net, batch, precision, scaler, device).item())
        optimizer_step(scaler, (sgd, adamw))
    record_property('losses', ' '.join(f'{loss:.4f}' for loss in losses))
    if scaler.is_enabled():
        record_property('loss_scale', scaler.get_scale())
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]


# ---- fast paths -----------------------------------------------------------------------------------
@pytest.mark.parametrize('switch', ['channels_last', 'fused_attention', 'recompute'])
def test_fast_path_computes_what_the_plain_path_does(device, exact_float32, switch, record_property):
    """Channels-last (cuDNN's NHWC convolutions), fused attention (SDPA kernels, backward too)
    and recomputation against the plain path."""
    plain, fast = tiny_twins(PLAIN, {**PLAIN, switch: True})
    compare_outputs_and_gradients(plain.to(device), fast.to(device), device, record_property)


# On the CPU, Inductor's C++ kernels take minutes to build: TorchDynamo's graphs run as they are
# (tests/test_fast_paths.py checks the graphs themselves).
COMPILE_BACKEND = on_device('inductor', 'eager')


def test_compiled_model_computes_what_the_eager_model_does(device, exact_float32, record_property):
    torch._dynamo.reset()        # no graphs of other models (recompile limit)
    eager, compiled = (net.to(device) for net in tiny_twins({}, {}))   # the defaults
    compile_model(compiled, backend=COMPILE_BACKEND)
    start = time.time()
    compare_outputs_and_gradients(eager, compiled, device, record_property)
    record_property('seconds_with_compilation', round(time.time() - start, 1))


SDPA_BACKENDS = ('FLASH_ATTENTION', 'EFFICIENT_ATTENTION', 'CUDNN_ATTENTION', 'MATH')


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'float64'])
def test_fused_attention_kernels(device, dtype, record_property):
    """Which SDPA kernels take the fused SCCA attention at the paper's sizes (8 heads of 32; the
    cross part has query/key heads of 64 and value heads of 32), forward and backward. float64
    has the math kernel only; on a GPU, float32 and bf16 must get a fused one."""
    attention = pytest.importorskip('torch.nn.attention')
    layer = WindowAttention(256, 8).to(device, getattr(torch, dtype))
    layer.fused = True
    windows = on_device(16, 2)      # which kernels fit depends on the heads and dtype only
    tokens = torch.randn(windows, 64, 256, device=device, dtype=layer.q.weight.dtype, requires_grad=True)
    keys = {'self': tokens, 'cross': torch.cat([tokens, torch.randn_like(tokens)], dim=1)}
    accepted = {}
    for name in SDPA_BACKENDS:
        backend = getattr(attention.SDPBackend, name, None)
        if backend is None:
            continue
        accepted[name] = []
        for kind, key in keys.items():
            try:
                with attention.sdpa_kernel([backend]):
                    layer(tokens, key).float().square().sum().backward()
                accepted[name].append(kind)
            except RuntimeError:     # "No available kernel": the shapes or dtype do not fit it
                pass
    record_property('kernels', '; '.join(f'{name}: {"+".join(kinds) or "none"}'
                                         for name, kinds in accepted.items()))
    assert accepted['MATH'] == ['self', 'cross']
    if device.type == 'cuda' and dtype != 'float64':
        assert any(kinds == ['self', 'cross'] for name, kinds in accepted.items() if name != 'MATH')


# ---- processes, evaluation, scripts ---------------------------------------------------------------
@pytest.fixture(scope='module')
def fake_pascal(tmp_path_factory):
    return make_pascal_config(str(tmp_path_factory.mktemp('fake_pascal')), n_train=0, n_val=60)


def test_torchrun_step_equals_one_process(device, exact_float32, one_thread, fake_pascal, tmp_path,
                                          record_property):
    """One process per GPU through torchrun (NCCL; on one GPU a world of one, still through NCCL
    and DDP) against one process with the same total batch. On the CPU a world of one through
    Gloo (tests/test_distributed.py runs two). tests/torchrun_step.py is each process."""
    processes = torch.cuda.device_count() if device.type == 'cuda' else 1
    out = str(tmp_path / 'rank0.pt')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])),
           'OMP_NUM_THREADS': '1'}
    run = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                          f'--nproc_per_node={processes}', os.path.join(ROOT, 'tests', 'torchrun_step.py'),
                          fake_pascal, out], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    record_property('processes', processes)
    one = validate_and_step(distributed.DistEnv(0, 1, 0, device), fake_pascal)
    # GPU kernels may sum in another order per batch size (and atomically): 10× the CPU's bounds
    assert_same_step(one, torch.load(out, weights_only=False), fake_pascal,
                     tolerance=10 if device.type == 'cuda' else 1)


@pytest.mark.parametrize('cache_device', [
    'same', pytest.param('host', marks=gpu_only('features kept on the host apart from a CUDA device: '
                                                 'on the CPU the host is the device'))])
def test_feature_cache_on_the_device(device, exact_float32, fake_pascal, cache_device, record_property):
    change = check_cached_evaluation(fake_pascal, 1, device, cache_device,
                                     tolerance=1e-4 if device.type == 'cuda' else 1e-6)
    record_property('largest_metric_change', change)


# ---- evaluation from CUDA graphs and in batches ----------------------------------------------------
def replay_capture(device):
    """The capture strategy of util.evaluation.replay: CUDA graphs on CUDA; on the CPU the plain
    call on the replay's buffers (everything but the graph)."""
    return capture_cuda_graph if device.type == 'cuda' else call_on_buffers


def test_replayed_forward_gives_the_eager_logits_and_follows_new_weights(device, exact_float32):
    """The eval forward replayed from a CUDA graph gives the eager logits bit for bit (the same
    kernels), also for a smaller batch padded into its recording; loading other weights (the
    frozen backbone's too, whose folded batch norm is cached) records anew: a stale graph would
    give the old weights' logits."""
    torch.manual_seed(0)
    net = build_sccan('tiny').to(device)
    forward = replayed_forward(net, capture=replay_capture(device))
    inputs = [t.to(device) for t in random_episode(b=4, k=2, size=33, seed=5)[:3]]
    with torch.no_grad():
        eager = net(*inputs)
    assert torch.equal(forward(*inputs), eager)
    partial = [t.to(device) for t in random_episode(b=3, k=2, size=33, seed=6)[:3]]
    with torch.no_grad():       # what the recording of 4 holds: 3 new rows, the last one's
        padded = net(*(torch.cat([p, t[3:]]) for p, t in zip(partial, inputs)))
    assert torch.equal(forward(*partial), padded[:3]) and forward.recorded == 1
    torch.manual_seed(1)
    net.load_state_dict(build_sccan('tiny').state_dict())
    with torch.no_grad():
        reloaded = net(*inputs)
    assert not torch.equal(reloaded, eager)
    assert torch.equal(forward(*inputs), reloaded) and forward.recorded == 2


@gpu_only('page-locked memory and CUDA graphs need CUDA')
def test_a_graph_records_while_another_thread_pins_memory(device, exact_float32):
    """The evaluation's DataLoader pins the next batches in a thread of its own while the first
    one is recorded: the recording must succeed (no fallback to eager) and that thread must not
    fail. A capture checking every thread's CUDA calls ('global') fails both."""
    torch.manual_seed(0)
    net = build_sccan('tiny').to(device)
    forward = replayed_forward(net)
    inputs = [t.to(device) for t in random_episode(b=2, k=1, size=33, seed=7)[:3]]
    stop, errors = threading.Event(), []

    def pin():
        held, size = [], 1 << 20
        try:
            while not stop.is_set():        # new sizes, held a while: new page-locked allocations
                held = held[-7:] + [torch.empty(size, dtype=torch.uint8, pin_memory=True)]
                size = size * 2 if size < 1 << 26 else 1 << 20
        except Exception as e:
            errors.append(e)
    thread = threading.Thread(target=pin)
    thread.start()
    try:
        logits = forward(*inputs)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert [recording.replay is not None for recording in forward.recordings.values()] == [True]
    with torch.no_grad():
        assert torch.equal(logits, net(*inputs))
    assert torch.cuda.current_stream(device) == torch.cuda.default_stream(device)


@gpu_only('TF32 is a CUDA setting')
@pytest.mark.parametrize('allowed', [False, True])
def test_a_segmenter_from_a_checkpoint_runs_its_configs_tf32(device, allowed, tmp_path):
    """predict_sccan.py and the app segment with the TF32 use test_sccan.py gives the same
    checkpoint (its config's `tf32`), so that both give the same masks."""
    checkpoint = torch.load(os.path.join(ROOT, 'examples', 'sccan_synthetic_tiny.pth'),
                            map_location='cpu', weights_only=False)
    checkpoint['config'] = {**checkpoint['config'], 'tf32': allowed}
    torch.save(checkpoint, tmp_path / 'model.pth')
    with tf32(not allowed):
        FewShotSegmenter.from_checkpoint(str(tmp_path / 'model.pth'), device=str(device))
        assert torch.backends.cuda.matmul.allow_tf32 is allowed
        assert torch.backends.cudnn.allow_tf32 is allowed


def test_evaluation_from_cuda_graphs_and_in_batches_scores_as_eager(device, exact_float32, fake_pascal,
                                                                    record_property):
    """test_sccan.py's loop on CUDA's defaults (three episodes per forward here, replayed from a
    CUDA graph) against eager at the same batch size (identical counts: the same kernels) and
    against one episode per forward (kernels chosen per batch size may round differently:
    the largest metric change is recorded, at most 0.01 points)."""
    (single, _), (batched, _), (replayed, predict) = evaluations_in_batches(
        fake_pascal, device, [(1, None), (3, None), (3, replay_capture(device))], episodes=6)
    assert replayed['per_episode'] == batched['per_episode'] and predict.replay.recorded == 1
    change = max(abs(batched[m] - single[m]) for m in ('mIoU', 'FB-IoU', 'pIoU'))
    counts = (batched['per_episode'].intersection - single['per_episode'].intersection).abs().sum()
    record_property('largest_metric_change_batched', change)
    record_property('pixels_counted_differently_batched', int(counts))
    assert change <= 1e-4


SYNTHETIC_CONFIG = os.path.join(ROOT, 'config', 'synthetic', 'synthetic_split0_resnet50.yaml')
LOOP = ['train_h', '57', 'train_w', '57', 'val_size', '57', 'model', 'tiny',
        'batch_size', '4', 'batch_size_val', '2', 'workers', '2', 'evaluate', 'True', 'test_num', '4',
        'print_freq', '1', 'feature_cache_gb', '0.5']


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    """Config overrides pointing at a small synthetic benchmark (util/datasets/synthetic.py)."""
    root = tmp_path_factory.mktemp('synthetic')
    write_benchmark(str(root / 'data'), n_train=60, n_val=40)
    return data_opts(str(root / 'data')) + ['list_dir', str(root / 'lists')]


@pytest.mark.parametrize('amp', ['none', FP16])
def test_training_loop_resumption_and_test_script(device, synthetic, amp, tmp_path, record_property):
    """Training as train_sccan.py runs it (util.training.train) for an epoch (pinned memory,
    workers, validation with the feature cache), resumed for a second one (CUDA random state and
    loss scale from the checkpoint), then meta-testing as test_sccan.py does
    (util.evaluation.checkpoint_evaluation.evaluate_checkpoint) on the result."""
    opts = [*synthetic, *LOOP, 'amp', amp, 'exp_dir', str(tmp_path)]
    env = distributed.DistEnv(0, 1, 0, device)
    first = train(load_config(SYNTHETIC_CONFIG, [*opts, 'epochs', '1']), env)
    steps = first.progress.iteration
    resumed = train(load_config(SYNTHETIC_CONFIG, [*opts, 'epochs', '2']), env, resume=first.paths.latest)
    report = evaluate_checkpoint(load_config(SYNTHETIC_CONFIG, opts), env, resumed.paths.latest, episodes=4)
    record_property('training_steps', resumed.progress.iteration)
    record_property('test_mIoU', report['mean']['mIoU'])
    assert steps > 0 and resumed.progress.iteration == 2 * steps
    assert resumed.net.backbone.body.conv1.weight.device.type == device.type
    assert math.isfinite(report['mean']['mIoU']) and report['seeds'][0]['episodes'] == 4
