"""Speed and memory of SCCAN through each entry point, side by side with the authors' model.

    python tools/benchmark.py                         # 473×473, ResNet-50, float32
    python tools/benchmark.py --reference             # and the authors' model
    python tools/benchmark.py --with-amp bf16         # and the scripts path under bf16 autocast
    python tools/benchmark.py --settings train-b8     # batch 8
    python tools/benchmark.py --tiny                  # a small smoke run (CI)

Paths, each a row of every setting, measured in the same run:
- scripts: as train_sccan.py and test_sccan.py run SCCAN: the default config (util.config; --opts
  KEY VALUE overrides it), util.experiment.ready_model, util.precision, the eval predictor of
  util.evaluate (with the feature cache for eval-5shot-cached) and the training step of
  util.optim (SGD + AdamW, loss scaling);
- api: the bare Python API as a notebook uses it, no config and no Precision: SCCAN(layers=...),
  load_state_dict, net(...), an SGD step;
- scripts+bf16 (--with-amp bf16, or fp16 on CUDA): the scripts path under that autocast;
- reference (--reference): the authors' model, built from their code by tools/reference.py
  (OFFICIAL_SCCAN points at a clone of their repository, outside this one; nothing of theirs is
  copied here).
For each: median seconds over repeats, GFLOP per call (counted once with
torch.utils.flop_counter), achieved GFLOP/s and its ratio to a float32 2048³ matmul measured in the
same run, peak memory, and time and memory as ratios to a baseline of the same run: the reference
when measured, else the scripts path. Each measurement runs in its own process so that its peak
memory (CPU: resident; CUDA: max allocated) is its own; --rounds N alternates the paths N times and
keeps the median time, so that a shared machine's load falls on every path alike.
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from model import SCCAN  # noqa: E402
from model.sccan import valid_input_size  # noqa: E402
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.config import default_config, parse_opts  # noqa: E402
from util.episodes import TRAINING_INPUTS, random_episode  # noqa: E402
from util.evaluate import forward_predictor, make_predictor  # noqa: E402
from util.experiment import ready_model  # noqa: E402
from util.optim import build_optimizers, forward_backward, optimizer_step  # noqa: E402
from util.outputs import write_json  # noqa: E402
from util.precision import precision_for, resolve_device  # noqa: E402

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
TINY = dict(fts_size=16, depth=2, reduce_dim=32, num_heads=4)
TINY_SIZE = 33
GIB = 1024 ** 3
CACHE_GB = 2.0     # room for the six images of a 5-shot episode at 473 (52 MB each)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=positive_int, default=473, help='input side, (size−1) %% 8 == 0')
    p.add_argument('--layers', type=int, default=50, choices=(50, 101))
    p.add_argument('--repeats', type=positive_int, default=3)
    p.add_argument('--rounds', type=positive_int, default=1,
                   help='alternate the paths this many times (median time, largest peak)')
    p.add_argument('--settings', nargs='+', default=DEFAULT_SETTINGS, choices=list(SETTINGS))
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--reference', action='store_true', help="also time the authors' model")
    p.add_argument('--with-amp', choices=('bf16', 'fp16'),
                   help='also time the scripts path under this autocast (fp16: CUDA only)')
    p.add_argument('--opts', nargs='+', default=[], metavar='KEY VALUE',
                   help='config overrides of the scripts path, e.g. channels_last False')
    p.add_argument('--json', help='also write the results to this file')
    p.add_argument('--tiny', action='store_true',
                   help=f'{TINY_SIZE}×{TINY_SIZE}, a small model, 1 repeat (smoke run)')
    p.add_argument('--one', help=argparse.SUPPRESS)   # internal: run one measurement, print JSON
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.repeats = TINY_SIZE, 1
    return args


# ---- the paths ----------------------------------------------------------------------------------
def scripts_step(args, mode, inputs, device, amp='none'):
    """One call of `mode` as train_sccan.py (train) and test_sccan.py (eval) make it."""
    cfg = default_config().replace(layers=args.layers, amp=amp, **(TINY if args.tiny else {}),
                                   **parse_opts(args.opts))
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
        predict = make_predictor(net, cfg.replace(feature_cache_gb=CACHE_GB), precision, device)
    else:
        predict = forward_predictor(net, precision, device)
    return without_grad(predict, batch)


def image_paths(batch, shot):
    """The file names a collated val batch carries (the feature cache's keys): query_path (B) and
    support_paths (K lists of B, shot-major as the DataLoader collates them)."""
    return {'query_path': [f'query{i}' for i in range(batch)],
            'support_paths': [[f'support{i}_{j}' for i in range(batch)] for j in range(shot)]}


def api_step(args, mode, inputs, device):
    """One call of `mode` through the bare Python API: SCCAN's own defaults, weights loaded from
    a checkpoint's (contiguous) state dict."""
    net = SCCAN(layers=args.layers, **(TINY if args.tiny else {}))
    net.load_state_dict(saved_state(net))
    return plain_step(net.to(device), mode, inputs)


def saved_state(net):
    """`net`'s weights as torch.load returns them from a checkpoint file."""
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, buffer)
    buffer.seek(0)
    return torch.load(buffer)


def reference_step(args, shot, mode, inputs, device):
    import reference           # tools/reference.py
    net = reference.build(layers=args.layers, shot=shot).to(device)
    return plain_step(net, mode, inputs, query_mask_argument=True)


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


def without_grad(function, *args):
    def run():
        with torch.no_grad():
            function(*args)
    return run


def step_for(args, path, setting, device):
    """The timed call of one (path, setting)."""
    mode, batch, shot = SETTINGS[setting]
    inputs = episode(batch, shot, args.size, device)
    if path == 'scripts':
        return scripts_step(args, mode, inputs, device)
    if path == 'api':
        return api_step(args, mode, inputs, device)
    if path == 'reference':
        return reference_step(args, shot, mode, inputs, device)
    return scripts_step(args, mode, inputs, device, amp=path.split('+')[1])   # scripts+<amp>


def paths_of(args):
    return (['scripts', 'api'] + ([f'scripts+{args.with_amp}'] if args.with_amp else [])
            + (['reference'] if args.reference else []))


def episode(batch, shot, size, device):
    return [t.to(device) for t in random_episode(batch, shot, size)]


# ---- measuring ----------------------------------------------------------------------------------
def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def median_seconds(run, repeats, device):
    """Median wall time of `run()` over `repeats` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(device):
    """{'peak_gb': ...} of this process so far; on CUDA also the allocator's reserved peak (what
    nvidia-smi shows, less the CUDA context).

    CPU: the high-water mark of this process's resident memory, VmHWM, which belongs to the
    address space exec created. Not getrusage's ru_maxrss: Linux carries that over fork and exec,
    so a child that subprocess starts (by vfork) from a large parent reports at least the parent's
    peak (measured: 1.5 GB for a child whose own peak was 9 MB). None where /proc is absent."""
    if device.type == 'cuda':
        return {'peak_gb': torch.cuda.max_memory_allocated(device) / GIB,
                'reserved_gb': torch.cuda.max_memory_reserved(device) / GIB}
    try:
        with open('/proc/self/status') as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
    except (OSError, StopIteration):
        return {'peak_gb': None}
    return {'peak_gb': kib / 1024 ** 2}


def measure_one(args, path, setting):
    """Time one (path, setting) in this process; returns a dict (printed as JSON by --one)."""
    device = resolve_device(args.device)
    run = step_for(args, path, setting, device)
    seconds = median_seconds(run, args.repeats, device)
    # Read before counting FLOPs: the counter's dispatch mode keeps tensors alive (~2× the peak).
    memory = peak_memory(device)
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return {'seconds': seconds, 'gflop': counter.get_total_flops() / 1e9, **memory}


def matmul_gflops(device, n=2048, repeats=5):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats, device) / 1e9


def measure_in_subprocess(argv, path, setting):
    """measure_one in a fresh process; {'error': ...} when it fails."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv, '--one', f'{path}:{setting}']
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


def with_ratios(rows, baseline):
    """Each row's time and peak memory ÷ the baseline row's (when both were measured)."""
    base = rows.get(baseline, {})
    for row in rows.values():
        if 'error' in row or 'error' in base or not base:
            continue
        row['time_ratio'] = row['seconds'] / base['seconds']
        if row.get('peak_gb') and base.get('peak_gb'):
            row['memory_ratio'] = row['peak_gb'] / base['peak_gb']
    return rows


# ---- output -------------------------------------------------------------------------------------
def header_line(args, device, peak_matmul, baseline):
    gpu = f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''
    return (f'device {device}{gpu}, {torch.get_num_threads()} threads, {args.size}×{args.size}, '
            f'ResNet-{args.layers}{" (tiny model)" if args.tiny else ""}, float32 unless the path '
            f'says otherwise; 2048³ matmul: {peak_matmul:.0f} GFLOP/s; base: {baseline}')


TABLE_HEADER = (f'{"setting":<17} {"path":<13} {"seconds":>8} {"GFLOP":>7} {"GFLOP/s":>8} '
                f'{"÷matmul":>8} {"peak GB":>8} {"time÷base":>9} {"mem÷base":>8}')


def table_line(setting, path, row, peak_matmul):
    if 'error' in row:
        return f'{setting:<17} {path:<13} failed: {row["error"]}'
    rate = row['gflop'] / row['seconds']
    return (f'{setting:<17} {path:<13} {row["seconds"]:8.3f} {row["gflop"]:7.1f} {rate:8.1f} '
            f'{rate / peak_matmul:8.2f} {optional(row.get("peak_gb")):>8} '
            f'{optional(row.get("time_ratio")):>9} {optional(row.get("memory_ratio")):>8}')


def optional(value):
    return '—' if value is None else f'{value:.2f}'


def check_args(args, device):
    if not valid_input_size(args.size):
        raise ValueError(f'--size {args.size}: (size−1) must be a multiple of 8 (e.g. 473, 233)')
    if args.reference and args.tiny:
        raise ValueError('--reference compares the full model: drop --tiny')
    if args.with_amp == 'fp16' and device.type != 'cuda':
        raise ValueError('--with-amp fp16 needs CUDA (util.precision runs fp16 on GPUs only)')


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.one:
        path, setting = args.one.split(':')
        print(json.dumps(measure_one(args, path, setting)))
        return 0
    device = resolve_device(args.device)
    check_args(args, device)
    peak_matmul = matmul_gflops(device)
    baseline = 'reference' if args.reference else 'scripts'
    header = header_line(args, device, peak_matmul, baseline)
    print(header)
    print(TABLE_HEADER)
    report = {'header': header, 'device': str(device),
              'gpu': torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
              'size': args.size, 'layers': args.layers, 'tiny': args.tiny,
              'matmul_gflops': peak_matmul, 'baseline': baseline, 'rows': []}
    for setting in args.settings:
        rows = with_ratios(measure_setting(argv, args, setting), baseline)
        for path, row in rows.items():
            print(table_line(setting, path, row, peak_matmul), flush=True)
            report['rows'].append({'setting': setting, 'path': path, **row})
    if args.json:
        write_json(args.json, report)
    failed = [r for r in report['rows'] if 'error' in r]
    for row in failed:
        print(f'\n{row["setting"]} {row["path"]} failed:\n{row["stderr"]}', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(run_main(main))
