"""Speed and memory of SCCAN: one tool, four modes, a table each.

    python tools/dev/benchmark.py [paths] [--reference] [--with-amp bf16] [--settings ...]
    python tools/dev/benchmark.py modes [--checkpoint CKPT] [--modes ...]
    python tools/dev/benchmark.py cache [--config FILE] [--shot 5] [--episodes 1000]
    python tools/dev/benchmark.py data [--episodes 200] [--data-root DIR --list FILE]

paths (the default mode): every setting through each entry point, measured in the same run:
- scripts: as train_sccan.py and test_sccan.py run SCCAN: the default config (util.config; --opts
  KEY VALUE overrides it), util.experiment.ready_model, util.precision, the eval predictor of
  util.evaluation.evaluate (its batch of episodes per forward and CUDA graphs by default on CUDA;
  the feature cache for eval-5shot-cached) and the training step of util.optim (SGD + AdamW, loss
  scaling);
- api: the bare Python API as a notebook uses it, no config and no Precision: build_sccan(...),
  load_state_dict, the eval forward through util.evaluation.replay.replayed_forward on the scripts'
  batch of episodes (docs/performance.md), an SGD step;
- scripts+bf16 (--with-amp bf16, or fp16 on CUDA): the scripts path under that autocast;
- reference (--reference): the authors' model, built from their code by tools/dev/reference.py
  (OFFICIAL_SCCAN points at a clone of their repository, outside this one; nothing of theirs is
  copied here), one episode per call as they ran it.
  For each: median seconds per episode (eval) or per training step over repeats, the model's
  GFLOP per episode or step (counted once per setting with torch.utils.flop_counter on the
  'meta' device, without recomputation: the same work for every path), the achieved TFLOP/s and
  its ratio to a bf16 8192³ matmul (256³ on a CPU or with --tiny) measured in the same run,
  on CUDA the GPU's busy fraction (kernel time over wall time in torch.profiler), peak memory,
  and time and memory as ratios to a baseline of the same run: the reference when measured, else
  the scripts path. Each measurement runs in its own process so that its peak memory (CPU:
  resident; CUDA: max allocated and reserved) is its own; --rounds N alternates the paths N
  times and keeps the median time, so that a shared machine's load falls on every path alike.
modes: each fast mode as one change to the default (float32, channels-last, recomputation and
  fused attention as the device decides): contiguous (channels_last: False), fused_attention
  (forced on), plain_attention (forced off), recompute (forced on), bf16 (amp: bf16), fp16 (CUDA
  only), compile. Per mode,
  in one process: median seconds of a 1-shot eval episode and of a training step (batch 2) and
  their ratio to the default, and the seconds of the first call of each (compile: the time it
  compiles, paid once per process); argmax agreement (the lowest over the episodes) and the largest
  logit change against the default on the golden episodes of the authors' code (tools/dev/golden.py);
  with --checkpoint (a synthetic-benchmark model, e.g. from `make demo`), mIoU of its val
  episodes and the change from the default.
cache: the same evaluation episodes (util.evaluation.evaluate.run_episodes, the loop of
  test_sccan.py) without and with the backbone feature cache, randomly initialised model: backbone
  passes per episode, episodes per second, the speed-up and the largest change of mIoU / FB-IoU /
  pIoU. On the synthetic benchmark by default (written first when missing).
data: episodes per second of one data loading process (one DataLoader worker), training episodes
  (augmentation and crop) and validation episodes (resize) for 1 and 5 shots; on the synthetic
  benchmark at VOC's typical image size (375×500) or a real list (--data-root, --list).

--tiny runs paths and modes on the tiny model variant at 33×33, one repeat (a smoke run); --json
FILE writes the mode's header and rows.
"""
import argparse
import collections
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # up from tools/dev/
sys.path.insert(0, REPO)
from tools.dev import golden  # noqa: E402
from model import build_sccan  # noqa: E402
from model.sccan import input_size_rule, valid_input_size  # noqa: E402
from util.transform import train_transform, val_transform  # noqa: E402
from util.cli import ArgumentParser, positive_float, positive_int, run_main  # noqa: E402
from util.config import default_config, load_config, merged_opts, parse_opts  # noqa: E402
from util.datasets import episode_dataset  # noqa: E402
from util.datasets.pascal_coco import EpisodeDataset  # noqa: E402
from util.datasets.synthetic import write_benchmark  # noqa: E402
from util.distributed import DistEnv  # noqa: E402
from tools.dev.random_episodes import random_episode  # noqa: E402
from util.episodes import MODEL_INPUTS, TRAINING_INPUTS  # noqa: E402
from util.evaluation.evaluate import eval_batch_size, make_predictor, run_episodes  # noqa: E402
from util.evaluation.replay import replayed_forward  # noqa: E402
from util.experiment import compile_model, ready_model  # noqa: E402
from util.files.writer import write_json  # noqa: E402
from util.optim import build_optimizers, forward_backward, optimizer_step  # noqa: E402
from util.precision import Precision, precision_for, resolve_device, set_tf32  # noqa: E402

SYNTHETIC_CONFIG = os.path.join(REPO, 'config', 'synthetic', 'synthetic_split0_resnet50.yaml')
TINY_SIZE = 33
GIB = 1024 ** 3


# ---- measuring ----------------------------------------------------------------------------------
def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def median_seconds(run, repeats, device):
    """Median wall time of `run()` over `repeats` calls, after one warm-up call."""
    return timed_calls(run, repeats, device)[1]


def timed_calls(run, repeats, device):
    """(seconds of the first call, median seconds of the `repeats` calls after it): the first
    call warms up (torch.compile compiles in it, cuDNN picks its algorithms, the allocator
    grows)."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def peak_memory(device):
    """{'peak_gb': ...} of this process so far; on CUDA also the allocator's reserved peak (what
    nvidia-smi shows, less the CUDA context).

    CPU: the high-water mark of this process's resident memory, VmHWM, which belongs to the
    address space exec created. Not getrusage's ru_maxrss: Linux carries that over fork and exec,
    so a child that subprocess starts (by vfork) from a large parent reports at least the parent's
    peak. None where /proc is absent."""
    if device.type == 'cuda':
        return {'peak_gb': torch.cuda.max_memory_allocated(device) / GIB,
                'reserved_gb': torch.cuda.max_memory_reserved(device) / GIB}
    try:
        with open('/proc/self/status') as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
    except (OSError, StopIteration):
        return {'peak_gb': None}
    return {'peak_gb': kib / 1024 ** 2}


def episode(batch, shot, size, device):
    """Random model inputs (query, support, support_masks, query_mask) on `device`."""
    return [t.to(device) for t in random_episode(batch, shot, size)]


def without_grad(function, *args):
    def run():
        with torch.no_grad():
            function(*args)
    return run


def plain_step(net, mode, inputs, query_mask_argument=False):
    """One call of `mode` on `net` as it is: eval (no autograd), cached (encode once, then
    segment) or train (forward, backward, an SGD step). query_mask_argument: eval passes None
    as the query mask (the authors' forward signature)."""
    query, support, masks, query_mask = inputs
    if mode == 'train':
        net.train()
        optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-9)

        def run():
            loss = net(query, support, masks, query_mask)[1]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return run
    net.eval()
    if mode == 'cached':
        with torch.no_grad():
            query_feats, support_feats = net.encode(query), net.encode(support.flatten(0, 1))
        out_size = net.output_size(query.shape[-2:])
        return without_grad(net.segment, query_feats, support_feats, masks, out_size)
    return without_grad(net, query, support, masks, *([None] if query_mask_argument else []))


def model_opts(args):
    """--opts of a model mode, after `model tiny` for --tiny."""
    return merged_opts(['model', 'tiny'] if getattr(args, 'tiny', False) else [], args.opts)


def evaluate_episodes(net, dataset, cfg, precision, device, episodes, predict=None):
    """run_episodes of the val data set of `cfg` in this one process."""
    return run_episodes(net, dataset, cfg, cfg.manual_seed, DistEnv(0, 1, 0, device), precision,
                        num_episodes=episodes, predict=predict, show_progress=False)


# ---- paths --------------------------------------------------------------------------------------
SETTINGS = {            # name: (mode, batch, shot)
    'eval-1shot': ('eval', 1, 1),
    'eval-5shot': ('eval', 1, 5),
    # An episode whose six images all hit the feature cache: everything after the backbone.
    'eval-5shot-cached': ('cached', 1, 5),
    'train-b2': ('train', 2, 1),
    'train-b4': ('train', 4, 1),
    'train-b8': ('train', 8, 1),   # on request: the reference needs ~21 GB here on a CPU
}
DEFAULT_SETTINGS = ['eval-1shot', 'eval-5shot', 'eval-5shot-cached', 'train-b2', 'train-b4']
CACHE_GB = 2.0     # room for the six images of a 5-shot episode at 473 (52 MB each)


def paths_config(args, amp='none'):
    return default_config().replace(layers=args.layers, amp=amp, **parse_opts(model_opts(args)))


def scripts_step(args, mode, inputs, device, amp='none'):
    """One call of `mode` as train_sccan.py (train) and test_sccan.py (eval) make it: eval
    through the predictor of util.evaluation.evaluate (CUDA graphs on CUDA, the feature cache for
    `cached`), on a batch of eval_batch_size episodes."""
    cfg = paths_config(args, amp)
    precision = precision_for(cfg, device)
    net = ready_model(cfg, device)
    batch = dict(zip(TRAINING_INPUTS, inputs))
    if mode == 'train':
        net.train()
        optimizers, scaler = build_optimizers(net, cfg), precision.grad_scaler()

        def run():
            forward_backward(net, batch, precision, scaler, device)
            optimizer_step(scaler, optimizers)
        return run
    net.eval()
    if mode == 'cached':   # the first call (the warm-up) fills the cache
        batch.update(image_paths(*inputs[2].shape[:2]))
        cfg = cfg.replace(feature_cache_gb=CACHE_GB * len(inputs[0]))
    return without_grad(make_predictor(net, cfg, precision, device), batch)


def image_paths(batch, shot):
    """The file names a collated val batch carries (the feature cache's keys): query_path (B) and
    support_paths (K lists of B, shot-major as the DataLoader collates them)."""
    return {'query_path': [f'query{i}' for i in range(batch)],
            'support_paths': [[f'support{i}_{j}' for i in range(batch)] for j in range(shot)]}


def api_step(args, mode, inputs, device):
    """One call of `mode` through the bare Python API: the model's own defaults, weights loaded
    from a checkpoint's (contiguous) state dict; eval through
    util.evaluation.replay.replayed_forward and, on CUDA, TF32 as the config's default, as
    docs/performance.md tells a notebook to."""
    if device.type == 'cuda':
        set_tf32(default_config().tf32)
    net = build_sccan('tiny') if args.tiny else build_sccan(layers=args.layers)
    net.load_state_dict(saved_state(net))
    net = net.to(device)
    if mode == 'eval':
        return without_grad(replayed_forward(net), *inputs[:3])
    return plain_step(net, mode, inputs)


def saved_state(net):
    """`net`'s weights as torch.load returns them from a checkpoint file."""
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, buffer)
    buffer.seek(0)
    return torch.load(buffer)


def reference_step(args, shot, mode, inputs, device):
    from tools.dev import reference
    net = reference.build(layers=args.layers, shot=shot).to(device)
    return plain_step(net, mode, inputs, query_mask_argument=True)


def step_for(args, path, setting, device):
    """(the timed call of one (path, setting), the episodes it evaluates: the batch the scripts
    evaluate per forward, one for the reference, as the authors ran it; None for a training
    step)."""
    mode, batch, shot = SETTINGS[setting]
    episodes = None if mode == 'train' else 1 if path == 'reference' else eval_batch_size(
        paths_config(args), device)
    inputs = episode(episodes or batch, shot, args.size, device)
    if path == 'scripts':
        return scripts_step(args, mode, inputs, device), episodes
    if path == 'api':
        return api_step(args, mode, inputs, device), episodes
    if path == 'reference':
        return reference_step(args, shot, mode, inputs, device), episodes
    return scripts_step(args, mode, inputs, device, amp=path.split('+')[1]), episodes   # scripts+<amp>


def paths_of(args):
    return (['scripts'] + ([] if args.no_api else ['api'])
            + ([f'scripts+{args.with_amp}'] if args.with_amp else [])
            + (['reference'] if args.reference else []))


def measure_one(args, path, setting):
    """Time one (path, setting) in this process; returns a dict (printed as JSON by --one):
    seconds per episode (eval) or per step (train), episodes_per_call, peak memory and the
    GPU's busy fraction."""
    device = resolve_device(args.device)
    if device.type == 'cuda':
        # the profiler started once before any CUDA graph is recorded: on older PyTorch and
        # CUDA, profiling a graph recorded before the profiler's first use failed or hung
        # (pytorch/pytorch#75504)
        with profile(activities=[ProfilerActivity.CUDA]):
            pass
    run, episodes = step_for(args, path, setting, device)
    seconds = median_seconds(run, args.repeats, device)
    memory = peak_memory(device)
    return {'seconds': seconds / (episodes or 1), 'episodes_per_call': episodes, **memory,
            **gpu_profile(run, device)}


def gpu_profile(run, device, calls=3):
    """Where `calls` calls of run() spend the GPU's time, from a torch.profiler trace:
    busy_fraction, the share of the wall time during which the GPU runs kernels or copies (the
    union of their intervals), and the kernels taking the most time (`top_kernels`).
    busy_fraction None off CUDA, or where the trace holds no GPU activity or the profiler fails
    (the time and memory of the row stand)."""
    if device.type != 'cuda':
        return {'busy_fraction': None}
    try:
        for timed in (False, True):          # the first trace starts the profiler up
            with profile(activities=[ProfilerActivity.CUDA]) as trace:
                synchronize(device)
                start = time.perf_counter()
                for _ in range(calls if timed else 1):
                    run()
                synchronize(device)
                wall = time.perf_counter() - start
    except RuntimeError as e:
        print(f'GPU busy fraction not measured: the profiler failed ({e})', file=sys.stderr)
        return {'busy_fraction': None}
    events = [e for e in trace.events() if e.device_type == DeviceType.CUDA]
    busy = [(e.time_range.start, e.time_range.end) for e in events]
    return {'busy_fraction': covered(busy) / 1e6 / wall if busy else None,
            'top_kernels': top_kernels([(e.name, e.time_range.end - e.time_range.start) for e in events],
                                       calls)}


TOP_KERNELS = 12            # kernels listed per row (the JSON's top_kernels, the kit's report)
KERNEL_NAME_CHARS = 90      # CUDA kernel names run to hundreds of template characters


def top_kernels(timings, calls, top=TOP_KERNELS):
    """[{'kernel', 'launches', 'ms'}] per call, most time first, of (name, µs) pairs over
    `calls` calls: what the next optimisation should aim at. Kernels are told apart by their
    whole names, shown cut at KERNEL_NAME_CHARS."""
    totals = collections.defaultdict(lambda: [0, 0.0])
    for name, microseconds in timings:
        total = totals[name]
        total[0] += 1
        total[1] += microseconds
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])[:top]
    return [{'kernel': name[:KERNEL_NAME_CHARS], 'launches': launches / calls,
             'ms': microseconds / 1e3 / calls} for name, (launches, microseconds) in ranked]


def covered(intervals):
    """The length of the union of (start, end) intervals."""
    total, reach = 0, float('-inf')
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def model_gflop(args, setting):
    """GFLOP of one episode (eval) or one training step of `setting`: the work of the scripts'
    model (the config and --opts) without recomputation, credited to every path alike; counted
    once with torch.utils.flop_counter on the 'meta' device (shapes only: no data, no time)."""
    mode, batch, shot = SETTINGS[setting]
    net = ready_model(paths_config(args).replace(backbone_weights=None, compile=False),
                      'meta').set_fast_paths(recompute=False)
    run = plain_step(net, mode, episode(batch, shot, args.size, torch.device('meta')))
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops() / 1e9


def matmul_bf16_tflops(device, n, repeats=5):
    """TFLOP/s of an n×n bf16 matmul: the device's matrix-product peak in this run."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats, device) / 1e12


def measure_in_subprocess(argv, path, setting):
    """measure_one in a fresh process; {'error': ...} when it fails."""
    cmd = [sys.executable, os.path.abspath(__file__), 'paths', *argv, '--one', f'{path}:{setting}']
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {'error': out.stderr.strip().splitlines()[-1] if out.stderr.strip() else
                f'exit status {out.returncode}', 'stderr': out.stderr[-3000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_setting(argv, args, setting):
    """{path: result} of one setting over args.rounds rounds, the paths' order alternating."""
    # The reference has no cache: its cached episode would be its plain one.
    paths = [p for p in paths_of(args) if not (p == 'reference' and SETTINGS[setting][0] == 'cached')]
    rounds = {p: [] for p in paths}
    for r in range(args.rounds):
        for path in (paths if r % 2 == 0 else paths[::-1]):
            rounds[path].append(measure_in_subprocess(argv, path, setting))
    return {path: combined(results) for path, results in rounds.items()}


def combined(results):
    """One result from the rounds of a path: median time, largest peak memory."""
    failed = [r for r in results if 'error' in r]
    if failed:
        return failed[0]
    merged = dict(results[0], seconds=statistics.median(r['seconds'] for r in results),
                  round_seconds=[r['seconds'] for r in results])
    for key in ('peak_gb', 'reserved_gb'):
        if merged.get(key) is not None:
            merged[key] = max(r[key] for r in results)
    return merged


def with_rates_and_ratios(rows, baseline, gflop, peak_matmul):
    """Each row's achieved TFLOP/s (the setting's `gflop` over its seconds), its ratio to the
    bf16 matmul's, and its time and peak memory ÷ the baseline row's (when both were
    measured)."""
    base = rows.get(baseline, {})
    for row in rows.values():
        if 'error' in row:
            continue
        row['gflop'] = gflop
        row['tflops'] = gflop / row['seconds'] / 1e3
        row['matmul_ratio'] = row['tflops'] / peak_matmul
        if 'error' in base or not base:
            continue
        row['time_ratio'] = row['seconds'] / base['seconds']
        if row.get('peak_gb') and base.get('peak_gb'):
            row['memory_ratio'] = row['peak_gb'] / base['peak_gb']
    return rows


def check_paths_args(args, device):
    if not valid_input_size(args.size):
        raise ValueError(f'--size {args.size}: expected {input_size_rule("size")}')
    if args.reference and args.tiny:
        raise ValueError('--reference compares the full model: drop --tiny')
    if args.with_amp == 'fp16' and device.type != 'cuda':
        raise ValueError('--with-amp fp16 needs CUDA (util.precision runs fp16 on GPUs only)')


def model_name(args):
    return 'the tiny model' if args.tiny else f'ResNet-{args.layers}'


def run_paths(args, argv, show):
    if args.one:
        path, setting = args.one.split(':')
        print(json.dumps(measure_one(args, path, setting)))
        return None
    device = resolve_device(args.device)
    check_paths_args(args, device)
    # a smoke run's figures mean nothing: a short matmul; a CPU without bf16 units takes seconds
    side = 8192 if device.type == 'cuda' and not args.tiny else 256
    peak_matmul = matmul_bf16_tflops(device, side)
    baseline = 'reference' if args.reference else 'scripts'
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else None
    header = (f'device {device}{f" ({gpu})" if gpu else ""}, {torch.get_num_threads()} threads, '
              f'{args.size}×{args.size}, {model_name(args)}, float32 unless the path says otherwise; '
              f'eval: seconds per episode; {side}³ bf16 matmul: {peak_matmul:.2f} TFLOP/s; '
              f'base: {baseline}')
    show(header=header)
    report = {'header': header, 'device': str(device), 'gpu': gpu, 'size': args.size,
              'layers': args.layers, 'tiny': args.tiny, 'matmul_bf16_tflops': peak_matmul,
              'baseline': baseline, 'rows': []}
    for setting in args.settings:
        rows = with_rates_and_ratios(measure_setting(argv, args, setting), baseline,
                                     model_gflop(args, setting), peak_matmul)
        for path, row in rows.items():
            report['rows'].append(show(row={'setting': setting, 'path': path, **row}))
        if args.json:       # after every setting: a run cut off keeps what it measured
            write_json(args.json, {'mode': args.mode, **report})
    for row in report['rows']:
        if 'error' in row:
            print(f'\n{row["setting"]} {row["path"]} failed:\n{row["stderr"]}', file=sys.stderr)
    return report


# ---- modes --------------------------------------------------------------------------------------
BASE_MODE = 'default'
MODES = {   # name: (SCCAN.set_fast_paths switches = config keys, autocast dtype)
    BASE_MODE: ({}, None),
    'contiguous': ({'channels_last': False}, None),
    'fused_attention': ({'fused_attention': True}, None),
    'plain_attention': ({'fused_attention': False}, None),     # the default's opposite on CUDA
    'recompute': ({'recompute': True}, None),                  # the low-memory option on CUDA
    'bf16': ({}, torch.bfloat16),
    'fp16': ({}, torch.float16),
    'compile': ({}, None),
}


def in_mode(net, mode, device):
    """(net on device in `mode`, its Precision); on CUDA with the default config's TF32, so that
    the default mode is the scripts' default."""
    if device.type == 'cuda':
        set_tf32(default_config().tf32)
    net = net.set_fast_paths(**MODES[mode][0]).to(device)
    if mode == 'compile':
        torch._dynamo.reset()   # a fresh model: forget graphs of earlier ones (recompile limit)
        compile_model(net)
    return net, Precision(device.type, MODES[mode][1])


def mode_seconds(mode, args, device):
    """{setting: (first call, median)} seconds of an eval 1-shot episode and of a training step
    (batch 2), setting 'eval' and 'train'."""
    seconds = {}
    for setting, batch in (('eval', 1), ('train', 2)):
        torch.manual_seed(0)
        net, precision = in_mode(build_sccan('tiny' if args.tiny else 'paper'), mode, device)
        run = plain_step(net, setting, episode(batch, 1, args.size, device))

        def run_in_mode():
            with precision.autocast():
                run()
        seconds[setting] = timed_calls(run_in_mode, args.repeats, device)
    return seconds


def golden_logits(mode, cases, device):
    """float32 logits of the golden episodes (tools/dev/golden.py: weights and inputs) in `mode`."""
    out = []
    for case in cases:
        net, precision = in_mode(golden.golden_model(case).float(), mode, device)
        inputs = golden.episode_inputs(case)
        with torch.no_grad(), precision.autocast():
            out.append(net(*(inputs[key].float().to(device) for key in MODEL_INPUTS)).float().cpu())
    return out


def synthetic_miou(mode, args, device):
    mode_keys = [str(item) for key_value in MODES[mode][0].items() for item in key_value]
    cfg = load_config(SYNTHETIC_CONFIG, mode_keys)   # the mode's switches as config keys
    net, precision = in_mode(ready_model(cfg, 'cpu', args.checkpoint), mode, device)
    return evaluate_episodes(net, episode_dataset(cfg, 'val'), cfg, precision, device, args.episodes)['mIoU']


def run_modes(args, argv, show):
    device = resolve_device(args.device)
    modes = [BASE_MODE] + [m for m in args.modes if not (m == 'fp16' and device.type != 'cuda')]
    cases = [] if args.tiny else list(golden.CASES.values())
    header = (f'device {device}, {torch.get_num_threads()} threads, {args.size}×{args.size}, '
              f'{"the tiny model" if args.tiny else "ResNet-50"}; golden episodes: '
              f'{len(cases) or "skipped (--tiny)"}')
    show(header=header)
    report, base = {'header': header, 'rows': []}, {}
    for mode in modes:
        seconds = mode_seconds(mode, args, device)
        logits = golden_logits(mode, cases, device)
        row = {'mode': mode, 'eval_seconds': seconds['eval'][1], 'train_seconds': seconds['train'][1],
               'eval_first_seconds': seconds['eval'][0], 'train_first_seconds': seconds['train'][0]}
        if args.checkpoint:
            row['miou'] = synthetic_miou(mode, args, device)
        if mode == BASE_MODE:
            base = {'row': row, 'logits': logits}
        row['eval_ratio'] = row['eval_seconds'] / base['row']['eval_seconds']
        row['train_ratio'] = row['train_seconds'] / base['row']['train_seconds']
        if cases:
            row['argmax_agreement'] = min((a.argmax(1) == b.argmax(1)).double().mean().item()
                                          for a, b in zip(logits, base['logits']))
            row['max_logit_change'] = max((a - b).abs().max().item() for a, b in zip(logits, base['logits']))
        if args.checkpoint:
            row['miou_change'] = row['miou'] - base['row']['miou']
        report['rows'].append(show(row=row))
    return report


# ---- cache --------------------------------------------------------------------------------------
def run_cache(args, argv, show):
    cfg = load_config(args.config, merged_opts(['shot', str(args.shot), 'feature_cache_gb',
                                                str(args.cache_gb)], args.opts))
    if os.path.abspath(args.config) == SYNTHETIC_CONFIG and not os.path.isfile(cfg.val_list):
        write_benchmark(cfg.data_root)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    net = ready_model(cfg.replace(backbone_weights=None), device).eval()   # random weights do
    precision = precision_for(cfg, device)
    dataset = episode_dataset(cfg, 'val')
    header = (f'{cfg.source}: {args.shot}-shot, {args.episodes} episodes over {len(dataset)} query images, '
              f'val_size {cfg.val_size}, ResNet-{cfg.layers}, {device}, {torch.get_num_threads()} threads')
    show(header=header)
    report = {'header': header, 'rows': []}
    plain = None
    for name, predict in (('plain', make_predictor(net, cfg.replace(feature_cache_gb=0), precision, device)),
                          ('cached', make_predictor(net, cfg, precision, device))):
        result = evaluate_episodes(net, dataset, cfg, precision, device, args.episodes, predict)
        cache = getattr(predict, 'cache', None)
        passes = cache.backbone_passes if cache else args.episodes * (1 + args.shot)
        row = {'run': name, 'backbone_passes': passes / args.episodes,
               'episodes_per_second': args.episodes / result['seconds'], 'mIoU': result['mIoU'],
               'cache_gb': cache.stats()['gb'] if cache else None}
        plain = plain or dict(row, result=result)
        row['speed_up'] = row['episodes_per_second'] / plain['episodes_per_second']
        # Not bit-identical: the backbone batches differ (cache misses only), so convolutions
        # round differently; the features are otherwise the same.
        row['metric_change'] = max(abs(result[m] - plain['result'][m]) for m in ('mIoU', 'FB-IoU', 'pIoU'))
        report['rows'].append(show(row=row))
    return report


# ---- data ---------------------------------------------------------------------------------------
def episodes_per_second(dataset, episodes):
    random.seed(0)
    dataset[0]                                   # warm up (file cache, OpenCV threads)
    start = time.perf_counter()
    for _ in range(episodes):
        dataset[random.randrange(len(dataset))]
    return episodes / (time.perf_counter() - start)


def run_data(args, argv, show):
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    header = f'one process, {args.threads} thread(s), {args.episodes} episodes each'
    show(header=header)
    report = {'header': header, 'rows': []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_root:
            root, lists, list_cache = args.data_root, {'train': args.list, 'val': args.list}, args.list_dir
        else:
            root, list_cache = tmp, os.path.join(tmp, 'lists')
            lists = write_benchmark(tmp, n_train=300, n_val=100, size=(375, 500))
        transforms = {'train': train_transform(args.size, args.size), 'val': val_transform(args.size)}
        for mode in ('train', 'val'):
            for shot in (1, 5):
                dataset = EpisodeDataset(args.data_set, root, lists[mode], args.split, shot, mode,
                                         transforms[mode], list_cache_dir=list_cache)
                rate = episodes_per_second(dataset, args.episodes)
                report['rows'].append(show(row={'mode': mode, 'shot': shot, 'size': args.size,
                                                'episodes_per_second': rate,
                                                'images_per_second': rate * (shot + 1)}))
    return report


# ---- tables -------------------------------------------------------------------------------------
def fixed(digits):
    return lambda value: f'{value:.{digits}f}'


def percent(value):
    return f'{100 * value:.3f} %'


def share(value):
    return f'{100 * value:.0f} %'


def signed(value):
    return f'{value:+.4f}'


# mode → columns: (title, row key, format: None for text, else a function of the value).
COLUMNS = {
    'paths': [('setting', 'setting', None), ('path', 'path', None),
              ('episodes/call', 'episodes_per_call', str),
              ('seconds', 'seconds', fixed(4)), ('GFLOP', 'gflop', fixed(1)), ('TFLOP/s', 'tflops', fixed(2)),
              ('÷matmul', 'matmul_ratio', fixed(3)), ('GPU busy', 'busy_fraction', share),
              ('peak GB', 'peak_gb', fixed(2)), ('reserved GB', 'reserved_gb', fixed(2)),
              ('time÷base', 'time_ratio', fixed(2)), ('mem÷base', 'memory_ratio', fixed(2))],
    'modes': [('mode', 'mode', None),
              ('eval s', 'eval_seconds', fixed(3)), ('÷default', 'eval_ratio', fixed(2)),
              ('train s', 'train_seconds', fixed(3)), ('÷default', 'train_ratio', fixed(2)),
              ('argmax agreement', 'argmax_agreement', percent),
              ('max |Δlogit|', 'max_logit_change', '{:.2e}'.format),
              ('synthetic mIoU', 'miou', fixed(4)), ('Δ mIoU', 'miou_change', signed),
              ('eval 1st call s', 'eval_first_seconds', fixed(3)),
              ('train 1st call s', 'train_first_seconds', fixed(3))],
    'cache': [('run', 'run', None), ('backbone passes/episode', 'backbone_passes', fixed(2)),
              ('episodes/s', 'episodes_per_second', fixed(2)), ('speed-up', 'speed_up', fixed(2)),
              ('mIoU', 'mIoU', fixed(6)), ('largest metric change', 'metric_change', '{:.1e}'.format),
              ('cache GB', 'cache_gb', fixed(2))],
    'data': [('mode', 'mode', None), ('shot', 'shot', str), ('size', 'size', str),
             ('episodes/s', 'episodes_per_second', fixed(1)), ('images/s', 'images_per_second', fixed(1))],
}
FAILED = 'failed'


def cells(mode, row):
    """The table cells of one row of `mode` (strings; '—' where a figure was not measured). A row
    that failed shows its first (text) columns and the error."""
    columns = COLUMNS[mode]
    if 'error' in row:
        text = [row[key] for _, key, fmt in columns if fmt is None]
        return text + [f'{FAILED}: {row["error"]}'] + [''] * (len(columns) - len(text) - 1)
    return [str(row[key]) if fmt is None else '—' if row.get(key) is None else fmt(row[key])
            for _, key, fmt in columns]


def table_line(mode, values):
    """One line of the text table: text columns left-aligned, figures right-aligned, each at
    least as wide as its title."""
    widths = [max(len(title), 8 if fmt else 17) for title, _, fmt in COLUMNS[mode]]
    aligned = [value.ljust(width) if fmt is None else value.rjust(width)
               for value, width, (_, _, fmt) in zip(values, widths, COLUMNS[mode])]
    return ' '.join(aligned).rstrip()


def printer(mode):
    """show(header=...) prints the header and the column titles; show(row=...) prints the row
    and returns it."""
    def show(header=None, row=None):
        if header is not None:
            print(header)
            print(table_line(mode, [title for title, _, _ in COLUMNS[mode]]), flush=True)
        if row is not None:
            print(table_line(mode, cells(mode, row)), flush=True)
        return row
    return show


# ---- command line -------------------------------------------------------------------------------
RUNS = {'paths': run_paths, 'modes': run_modes, 'cache': run_cache, 'data': run_data}


def parse_args(argv):
    """(mode, options); without a mode name first, `paths`."""
    if not argv or argv[0] not in RUNS and argv[0] not in ('-h', '--help'):
        argv = ['paths', *argv]
    parser = ArgumentParser(description=__doc__.split('\n')[0],
                            epilog='Without a MODE: paths. Each mode has its own options: '
                                   'tools/dev/benchmark.py MODE --help.')
    modes = parser.add_subparsers(dest='mode', required=True, metavar='MODE', parser_class=ArgumentParser)
    json_option = ArgumentParser(add_help=False)
    json_option.add_argument('--json', help="also write the mode's header and rows to this file")
    model_options = ArgumentParser(add_help=False, parents=[json_option])
    model_options.add_argument('--size', type=positive_int, default=473,
                               help='input side, ' + input_size_rule('size').replace('%', '%%'))
    model_options.add_argument('--repeats', type=positive_int, default=3)
    model_options.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    model_options.add_argument('--tiny', action='store_true',
                               help=f'the tiny model variant, {TINY_SIZE}×{TINY_SIZE}, '
                                    '1 repeat (a smoke run)')

    p = modes.add_parser('paths', parents=[model_options], help='every entry point side by side')
    p.add_argument('--layers', type=int, default=50, choices=(50, 101))
    p.add_argument('--rounds', type=positive_int, default=1,
                   help='alternate the paths this many times (median time, largest peak)')
    p.add_argument('--settings', nargs='+', default=DEFAULT_SETTINGS, choices=list(SETTINGS))
    p.add_argument('--reference', action='store_true', help="also time the authors' model")
    p.add_argument('--with-amp', choices=('bf16', 'fp16'),
                   help='also time the scripts path under this autocast (fp16: CUDA only)')
    p.add_argument('--no-api', action='store_true',
                   help='leave out the api path (it runs the scripts\' code; the GPU kit saves its time)')
    p.add_argument('--opts', nargs='+', default=[], metavar='KEY VALUE',
                   help='config overrides of the scripts path, e.g. channels_last False')
    p.add_argument('--one', help=argparse.SUPPRESS)   # internal: run one measurement, print JSON

    p = modes.add_parser('modes', parents=[model_options], help='each fast mode against the default')
    p.add_argument('--modes', nargs='+', default=[m for m in MODES if m != BASE_MODE],
                   choices=[m for m in MODES if m != BASE_MODE])
    p.add_argument('--checkpoint', help='synthetic-benchmark checkpoint for the mIoU column')
    p.add_argument('--episodes', type=positive_int, help='synthetic val episodes (default: its test_num)')

    p = modes.add_parser('cache', parents=[json_option], help='evaluation with and without the feature cache')
    p.add_argument('--config', default=SYNTHETIC_CONFIG)
    p.add_argument('--shot', type=positive_int, default=5)
    p.add_argument('--episodes', type=positive_int, default=1000)
    p.add_argument('--cache-gb', type=positive_float, default=4.0)
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--opts', nargs='+', default=[], metavar='KEY VALUE', help='config overrides')

    p = modes.add_parser('data', parents=[json_option], help='episodes per second of one loading process')
    p.add_argument('--episodes', type=positive_int, default=200, help='episodes per measurement')
    p.add_argument('--size', type=positive_int, default=473, help='train crop / val size')
    p.add_argument('--data-set', default='pascal', choices=('pascal', 'coco'))
    p.add_argument('--data-root', help='real data instead of generated (with --list)')
    p.add_argument('--list', help='list file for train-mode and val-mode episodes')
    p.add_argument('--list-dir', help="where the real data's class lists are cached (default: the "
                   "repository's lists/, as the config key list_dir)")
    p.add_argument('--split', type=int, default=0, choices=(0, 1, 2, 3))
    p.add_argument('--threads', type=positive_int, default=1,
                   help='OpenCV/torch threads (DataLoader workers run with 1)')

    args = parser.parse_args(argv)
    if getattr(args, 'tiny', False):
        args.size, args.repeats = TINY_SIZE, 1
    return args, argv[1:]


def main(argv=None):
    args, mode_argv = parse_args(list(sys.argv[1:] if argv is None else argv))
    report = RUNS[args.mode](args, mode_argv, printer(args.mode))
    if report is None:      # paths --one: printed its measurement
        return 0
    if args.json:
        write_json(args.json, {'mode': args.mode, **report})
    return 1 if any('error' in row for row in report['rows']) else 0


if __name__ == '__main__':
    sys.exit(run_main(main))
