"""Speed and memory of SCCAN: eval episodes (1- and 5-shot) and training steps.

    python tools/benchmark.py                         # 473×473, ResNet-50, float32
    python tools/benchmark.py --reference             # side by side with the authors' model
    python tools/benchmark.py --tiny                  # a small smoke run (CI)

Ours runs as train_sccan.py and test_sccan.py run it by default (channels-last; float32);
eval-5shot-cached is an episode whose images all hit the evaluation feature cache.
For each setting: median seconds over repeats, GFLOP per call (counted once with
torch.utils.flop_counter), achieved GFLOP/s and its ratio to a float32 2048³ matmul measured in
the same run, and peak memory. Each setting runs in a fresh subprocess so that the peak RSS
(CPU) or max allocated memory (CUDA) is its own. --reference builds the authors' model with
tools/reference.py from their code (OFFICIAL_SCCAN points at a clone of it, outside the repo; their
model/ and util/ folders) and prints our time and memory as ratios to theirs.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.precision import resolve_device  # noqa: E402

SETTINGS = {            # name: (mode, batch, shot)
    'eval-1shot': ('eval', 1, 1),
    'eval-5shot': ('eval', 1, 5),
    # An episode whose six images all hit the feature cache: everything after the backbone.
    'eval-5shot-cached': ('cached', 1, 5),
    'train-b2': ('train', 2, 1),
    'train-b4': ('train', 4, 1),
    'train-b8': ('train', 8, 1),   # not run by default: the reference would need ~21 GB here
}
DEFAULT_SETTINGS = ['eval-1shot', 'eval-5shot', 'eval-5shot-cached', 'train-b2', 'train-b4']
TINY = dict(fts_size=16, depth=2, reduce_dim=32, num_heads=4)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=positive_int, default=473, help='input side, (size−1) % 8 == 0')
    p.add_argument('--layers', type=int, default=50, choices=(50, 101))
    p.add_argument('--repeats', type=positive_int, default=3)
    p.add_argument('--settings', nargs='+', default=DEFAULT_SETTINGS, choices=list(SETTINGS))
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--reference', action='store_true', help="also time the authors' model")
    p.add_argument('--no-channels-last', dest='channels_last', action='store_false',
                   help='run ours in the contiguous layout (the configs default to channels-last)')
    p.add_argument('--tiny', action='store_true', help='57×57, a small model, 1 repeat (smoke run)')
    p.add_argument('--one', help=argparse.SUPPRESS)   # internal: run one measurement, print JSON
    return p.parse_args(argv)


def build(implementation, args, shot, device):
    """The model of one setting: ours as train_sccan.py / test_sccan.py run it."""
    if implementation == 'ours':
        from model import build_sccan
        net = build_sccan(layers=args.layers, **(TINY if args.tiny else {}))
        return net.set_fast_paths(channels_last=args.channels_last).to(device)
    import reference           # tools/reference.py
    return reference.build(layers=args.layers, shot=shot).to(device)


def episode(batch, shot, size, device):
    g = torch.Generator().manual_seed(0)
    query = torch.randn(batch, 3, size, size, generator=g)
    support = torch.randn(batch, shot, 3, size, size, generator=g)
    masks = (torch.rand(batch, shot, size, size, generator=g) > 0.5).float()
    query_mask = (torch.rand(batch, size, size, generator=g) > 0.5).float()
    return [t.to(device) for t in (query, support, masks, query_mask)]


def step_function(net, implementation, mode, inputs):
    query, support, masks, query_mask = inputs
    if mode == 'eval':
        net.eval()

        def run():
            with torch.no_grad():
                net(query, support, masks, *([None] if implementation == 'reference' else []))
        return run
    if mode == 'cached':
        net.eval()
        with torch.no_grad():
            query_feats, support_feats = net.encode(query), net.encode(support.flatten(0, 1))
        out_size = net.output_size(query.shape[-2:])

        def run():
            with torch.no_grad():
                net.segment(query_feats, support_feats, masks, out_size)
        return run
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-9)

    def run():
        loss = net(query, support, masks, query_mask)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return run


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def measure_one(args, implementation, setting):
    """Time one setting in this process; returns a dict (printed as JSON by --one)."""
    device = resolve_device(args.device)
    mode, batch, shot = SETTINGS[setting]
    net = build(implementation, args, shot, device)
    run = step_function(net, implementation, mode, episode(batch, shot, args.size, device))
    seconds = median_seconds(run, args.repeats, device)
    # Read before counting FLOPs: the counter's dispatch mode keeps tensors alive (~2× the peak).
    if device.type == 'cuda':
        peak_gb = torch.cuda.max_memory_allocated() / 1024 ** 3
    else:
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2   # KiB → GiB
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return {'seconds': seconds, 'gflop': counter.get_total_flops() / 1e9,
            'peak_gb': peak_gb, 'device': str(device)}


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


def matmul_gflops(device, n=2048, repeats=5):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats, device) / 1e9


def measure_in_subprocess(argv, implementation, setting):
    cmd = [sys.executable, os.path.abspath(__file__), *argv, '--one', f'{implementation}:{setting}']
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f'{implementation} {setting} failed:\n{out.stderr[-2000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.tiny:
        args.size, args.repeats = 57, 1
    if args.one:
        implementation, setting = args.one.split(':')
        print(json.dumps(measure_one(args, implementation, setting)))
        return
    if (args.size - 1) % 8:
        raise SystemExit(f'--size {args.size}: (size−1) must be a multiple of 8 (e.g. 473, 233)')
    if args.reference and args.tiny:
        raise SystemExit('--reference compares the full model: drop --tiny')
    device = resolve_device(args.device)
    peak_matmul = matmul_gflops(device)
    print(f'device {device}, {torch.get_num_threads()} threads, {args.size}×{args.size}, '
          f'ResNet-{args.layers}{" (tiny model)" if args.tiny else ""}, float32; '
          f'2048³ matmul: {peak_matmul:.0f} GFLOP/s')
    implementations = ['ours'] + (['reference'] if args.reference else [])
    header = (f'{"setting":<17} {"impl":<9} {"seconds":>8} {"GFLOP":>7} {"GFLOP/s":>8} '
              f'{"÷matmul":>8} {"peak GB":>8}' + ('  ours÷ref time  mem' if args.reference else ''))
    print(header)
    for setting in args.settings:
        # The reference has no cache: its cached episode would be its plain one.
        rows = {impl: measure_in_subprocess(argv, impl, setting) for impl in implementations
                if not (impl == 'reference' and SETTINGS[setting][0] == 'cached')}
        for impl, r in rows.items():
            rate = r['gflop'] / r['seconds']
            line = (f'{setting:<17} {impl:<9} {r["seconds"]:8.3f} {r["gflop"]:7.1f} {rate:8.1f} '
                    f'{rate / peak_matmul:8.2f} {r["peak_gb"]:8.2f}')
            if impl == 'ours' and 'reference' in rows:
                ref = rows['reference']
                line += (f'  {r["seconds"] / ref["seconds"]:13.2f} '
                         f'{r["peak_gb"] / ref["peak_gb"]:5.2f}')
            print(line, flush=True)


if __name__ == '__main__':
    run_main(main)
