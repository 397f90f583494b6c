"""Fast modes against the default (float32, channels-last): their speed and effect on outputs.

    python tools/benchmark_modes.py                            # all modes, 473×473, ResNet-50
    python tools/benchmark_modes.py --checkpoint exp/synthetic/pascal/SCCAN/split0/resnet50/snapshot/train_latest.pth

Modes, each one change to the default configuration (config keys in parentheses): contiguous
(channels_last: False), fused_attention (fused_attention: True), bf16 (amp: bf16), fp16 (amp:
fp16, CUDA only), compile (compile: True).
For each mode, in one process so that every ratio compares runs of the same moment:
- the median time of a 1-shot eval episode and of a training step (batch 2) at --size, random
  weights, and their ratio to the default;
- argmax agreement with the default (share of equal pixels, the lowest over the episodes) and the
  largest logit change on the golden episodes of the authors' code (tools/golden.py: their
  inputs and weights);
- with --checkpoint (a synthetic-benchmark model, e.g. from `make demo`): mIoU of its val
  episodes (config/synthetic) and the change from the default.
"""
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import golden  # noqa: E402  (tools/golden.py)
from benchmark import TINY, TINY_SIZE, episode, median_seconds, plain_step  # noqa: E402
from model import build_sccan  # noqa: E402
from util import distributed  # noqa: E402
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.config import load_config  # noqa: E402
from util.datasets import episode_dataset  # noqa: E402
from util.episodes import MODEL_INPUTS  # noqa: E402
from util.evaluate import run_episodes  # noqa: E402
from util.experiment import compile_model, model_for_checkpoint  # noqa: E402
from util.precision import Precision, resolve_device  # noqa: E402

SYNTHETIC_CONFIG = os.path.join(REPO, 'config', 'synthetic', 'synthetic_split0_resnet50.yaml')
BASE = 'default'
MODES = {   # name: (SCCAN.set_fast_paths switches = config keys, Precision keyword arguments)
    BASE: ({}, {}),
    'contiguous': ({'channels_last': False}, {}),
    'fused_attention': ({'fused_attention': True}, {}),
    'bf16': ({}, {'dtype': torch.bfloat16}),
    'fp16': ({}, {'dtype': torch.float16}),
    'compile': ({}, {}),
}


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--modes', nargs='+', default=[m for m in MODES if m != BASE],
                   choices=[m for m in MODES if m != BASE])
    p.add_argument('--size', type=positive_int, default=473)
    p.add_argument('--repeats', type=positive_int, default=3)
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--checkpoint', help='synthetic-benchmark checkpoint for the mIoU column')
    p.add_argument('--episodes', type=positive_int, help='synthetic val episodes (default: its test_num)')
    p.add_argument('--tiny', action='store_true',
                   help=f'{TINY_SIZE}×{TINY_SIZE}, a small model, 1 repeat, no golden episodes (smoke run)')
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.repeats = TINY_SIZE, 1
    return args


def prepared(net, mode, device):
    """(net on device in `mode`, its Precision)."""
    precision = Precision(device.type, **MODES[mode][1])
    net = net.set_fast_paths(**MODES[mode][0]).to(device)
    if mode == 'compile':   # a fresh model: forget graphs of earlier ones (recompile limit)
        torch._dynamo.reset()
        compile_model(net)
    return net, precision


def timings(mode, args, device):
    """Median seconds of an eval 1-shot episode and of a training step (batch 2)."""
    seconds = {}
    for setting, batch in (('eval', 1), ('train', 2)):
        torch.manual_seed(0)
        net, precision = prepared(build_sccan(**(TINY if args.tiny else {})), mode, device)
        inputs = episode(batch, 1, args.size, device)
        run = plain_step(net, setting, inputs)

        def run_in_mode():
            with precision.autocast():
                run()
        seconds[setting] = median_seconds(run_in_mode, args.repeats, device)
    return seconds


def golden_logits(mode, cases, device):
    """float32 logits of the golden episodes (tools/golden.py: weights and inputs) in `mode`."""
    out = []
    for case in cases:
        net = build_sccan(layers=case['layers'])
        net.load_state_dict(golden.make_state_dict(net.state_dict()))
        net, precision = prepared(net.eval(), mode, device)
        inputs = golden.episode_inputs(case)
        with torch.no_grad(), precision.autocast():
            out.append(net(*(inputs[key].float().to(device) for key in MODEL_INPUTS)).float().cpu())
    return out


def synthetic_miou(mode, args, device):
    model_options = [str(item) for key_value in MODES[mode][0].items() for item in key_value]
    cfg = load_config(SYNTHETIC_CONFIG, model_options)   # the mode's switches as config keys
    net, precision = prepared(model_for_checkpoint(cfg, args.checkpoint)[0], mode, device)
    env = distributed.DistEnv(0, 1, 0, device)
    dataset = episode_dataset(cfg, 'val')
    result = run_episodes(net, dataset, cfg, cfg.manual_seed, env,
                          precision, num_episodes=args.episodes, show_progress=False)
    return result['mIoU']


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    modes = [BASE] + [m for m in args.modes if not (m == 'fp16' and device.type != 'cuda')]
    cases = [] if args.tiny else list(golden.CASES.values())
    print(f'device {device}, {torch.get_num_threads()} threads, {args.size}×{args.size}, ResNet-50; '
          f'golden episodes: {len(cases) or "skipped (--tiny)"}')
    print(f'{"mode":<16} {"eval s":>7} {"ratio":>5} {"train s":>8} {"ratio":>5} '
          f'{"argmax agree":>12} {"max |Δlogit|":>12}' + ('  synthetic mIoU (Δ)' if args.checkpoint else ''))
    base = {}
    for mode in modes:
        seconds = timings(mode, args, device)
        logits = golden_logits(mode, cases, device)
        miou = synthetic_miou(mode, args, device) if args.checkpoint else None
        if mode == BASE:
            base = {'seconds': seconds, 'logits': logits, 'miou': miou}
        line = (f'{mode:<16} {seconds["eval"]:7.3f} {seconds["eval"] / base["seconds"]["eval"]:5.2f} '
                f'{seconds["train"]:8.3f} {seconds["train"] / base["seconds"]["train"]:5.2f}')
        if cases:
            agree = [(a.argmax(1) == b.argmax(1)).double().mean().item() for a, b in zip(logits, base['logits'])]
            change = max((a - b).abs().max().item() for a, b in zip(logits, base['logits']))
            line += f' {100 * min(agree):11.3f}% {change:12.2e}'
        if miou is not None:
            line += f'  {miou:.4f} ({miou - base["miou"]:+.4f})'
        print(line, flush=True)


if __name__ == '__main__':
    run_main(main)
