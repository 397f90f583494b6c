"""Make the model shipped in examples/: the tiny SCCAN meta-trained on the synthetic benchmark,
its test on the held-out classes, the example images and the model card (examples/README.md).

    python tools/dev/make_example_model.py                  # rewrites examples/ (asks for --overwrite)
    python tools/dev/make_example_model.py --out /tmp/ex    # elsewhere, e.g. to compare

Steps: the synthetic benchmark as `make demo` writes it (seed 0, 1,500 + 600 images in
data/synthetic, reused when it is there); meta-training with config/synthetic/
synthetic_split0_tiny.yaml (the tiny model, fold 0, 1-shot) in its own run folder
(exp/example_model, replaced by each run), on the CPU in one thread so that the same machine
and torch give the same bytes; the test of the final weights on the 5 held-out classes
(test_num episodes, 95 % bootstrap intervals), as test_sccan.py tests. It then writes to --out:
sccan_synthetic_tiny.pth (weights, architecture, shot and config with paths relative to the
repository; no optimiser state), the example (the first three validation images showing class
2, a class the model never trained on: support.jpg with support_mask.png for predict_sccan.py,
query1.jpg, query2.jpg, and their label maps listed in synthetic_val.txt, the benchmark's
layout, for the app's example button) and README.md, the model card with the scores.
"""
import functools
import os
import platform
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # up from tools/dev/
sys.path.insert(0, REPO)

from model import sccan_from_checkpoint  # noqa: E402
from model.checkpoint import weights_checkpoint  # noqa: E402
from tools.demo import data_opts  # noqa: E402
from util import distributed  # noqa: E402
from util.cli import ArgumentParser, run_main  # noqa: E402
from util.config import REPO_ROOT, SCHEMA, load_config  # noqa: E402
from util.datasets import SYNTHETIC_LISTS  # noqa: E402
from util.datasets.synthetic import (TRAIN_IMAGES, VAL_IMAGES, is_generated,  # noqa: E402
                                     write_benchmark)
from util.evaluation.checkpoint_evaluation import evaluate_checkpoint  # noqa: E402
from util.files.checks import check_outputs  # noqa: E402
from util.files.image_io import (IGNORE_LABEL, read_bytes, read_label, read_mask,  # noqa: E402
                                 read_rgb)
from util.files.weights import sha256_of_file  # noqa: E402
from util.files.writer import save_checkpoint, write_atomic  # noqa: E402
from util.lists import read_list  # noqa: E402
from util.log import close_logging, setup_logging  # noqa: E402
from util.prediction.app import EXAMPLE_CLASS, SegmentationApp  # noqa: E402
from util.prediction.predictor import FewShotSegmenter  # noqa: E402
from util.training import train  # noqa: E402

CONFIG = 'config/synthetic/synthetic_split0_tiny.yaml'
BENCHMARK = {'seed': 0, 'n_train': TRAIN_IMAGES, 'n_val': VAL_IMAGES}      # make demo's
MODEL = 'sccan_synthetic_tiny.pth'
EXAMPLE = ('support', 'query1', 'query2')                   # the example's images, in list order
CARD = 'README.md'


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=os.path.join(REPO, 'examples'), help='where the model, the '
                   'example and the card go')
    p.add_argument('--root', default=os.path.join(REPO, 'data', 'synthetic'),
                   help='the synthetic benchmark (written there when missing)')
    p.add_argument('--overwrite', action='store_true', help='replace the files of an earlier run')
    return p.parse_args(argv)


def outputs(out):
    """Every file the command writes in `out`."""
    example = [os.path.join(out, f'{name}{ext}') for name in EXAMPLE for ext in ('.jpg', '_label.png')]
    names = (MODEL, CARD, SYNTHETIC_LISTS['val'], 'support_mask.png')
    return [os.path.join(out, name) for name in names] + example


def portable(config):
    """A config dict with its paths relative to the repository, so that the checkpoint's bytes
    do not depend on where the repository lies."""
    return {k: os.path.relpath(v, REPO_ROOT) if SCHEMA[k].path and isinstance(v, str) else v
            for k, v in config.items()}


def ship_model(trained, path):
    """The trained weights as a checkpoint to ship: what predicting needs, nothing to resume."""
    net, checkpoint = sccan_from_checkpoint(trained)
    shipped = weights_checkpoint(net, shot=checkpoint['shot'], config=portable(checkpoint['config']))
    save_checkpoint(shipped, path)
    return net


def write_example(root, out):
    """The example the app picks from the benchmark (util.prediction.app: the first validation
    images showing its class), under the names of EXAMPLE, with the list of the benchmark's
    layout."""
    with tempfile.TemporaryDirectory() as scratch:
        support, mask, queries = SegmentationApp(scratch).synthetic_example(root)
        write_atomic(os.path.join(out, 'support_mask.png'), read_bytes(mask))
        labels = dict((os.path.basename(image), label) for image, label in
                      read_list(os.path.join(root, SYNTHETIC_LISTS['val'])))
        lines = []
        for name, image in zip(EXAMPLE, [support, *queries]):
            write_atomic(os.path.join(out, name + '.jpg'), read_bytes(image))
            label = labels[os.path.basename(image)]
            write_atomic(os.path.join(out, name + '_label.png'), read_bytes(os.path.join(root, label)))
            lines.append(f'{name}.jpg {name}_label.png\n')
        write_atomic(os.path.join(out, SYNTHETIC_LISTS['val']), ''.join(lines))


def example_ious(model, out):
    """IoU of the model's mask of each example query (as predict_sccan.py segments it) with the
    example's class in the query's label map, label pixels 255 left out: {query name: IoU}."""
    seg = FewShotSegmenter.from_checkpoint(model, device='cpu')
    path = functools.partial(os.path.join, out)
    support = ([read_rgb(path('support.jpg'))], [read_mask(path('support_mask.png'))])
    queries = EXAMPLE[1:]
    masks = seg.segment_many(*support, [read_rgb(path(f'{name}.jpg')) for name in queries])
    ious = {}
    for name, mask in zip(queries, masks):
        label = read_label(path(f'{name}_label.png'))
        valid = label != IGNORE_LABEL
        truth, predicted = (label == EXAMPLE_CLASS) & valid, (mask > 0) & valid
        ious[name] = float((truth & predicted).sum() / (truth | predicted).sum())
    return ious


def percent(value, interval):
    return f'{100 * value:.1f} ({100 * interval[0]:.1f} to {100 * interval[1]:.1f})'


# The vector units that change a CPU's rounding (Linux's cpuinfo flags), widest first
VECTOR_UNITS = (('amx_bf16', 'AMX-bf16'), ('avx512f', 'AVX-512'), ('avx2', 'AVX2'))


def cpu_name():
    """The CPU's model name and its widest vector unit (Linux), else what the platform says:
    weights trained on another instruction set may differ in their last bits."""
    try:
        with open('/proc/cpuinfo') as f:
            info = {key.strip(): value.strip() for key, value in
                    (line.split(':', 1) for line in f if ':' in line)}
        flags = info.get('flags', '').split()
        unit = next((name for flag, name in VECTOR_UNITS if flag in flags), None)
        return info['model name'] + (f' with {unit}' if unit else '')
    except (OSError, KeyError):
        return platform.processor() or 'an unnamed CPU'


def card(report, net, path, seconds, ious):
    """The model card (Markdown)."""
    seed = report['seeds'][0]
    pooled = report['uncertainty']['pooled']
    classes = '\n'.join(f'| {c} | {percent(iou, interval)} | {n} |' for c, iou, interval, n in zip(
        seed['class_ids'], seed['class_IoU'], pooled['class_IoU'], seed['class_episodes']))
    architecture = ', '.join(f'{k} {v}' for k, v in net.architecture.items())
    trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return CARD_TEMPLATE.format(
        size=os.path.getsize(path), sha256=sha256_of_file(path), architecture=architecture,
        trained=trained, total=sum(v.numel() for v in net.state_dict().values()),
        episodes=report['episodes'], seed=seed['seed'], classes=classes,
        miou=percent(report['mean']['mIoU'], pooled['mIoU']),
        fbiou=percent(report['mean']['FB-IoU'], pooled['FB-IoU']),
        example_class=EXAMPLE_CLASS, iou1=ious['query1'], iou2=ious['query2'],
        config=CONFIG, cpu=cpu_name(), torch=torch.__version__, python=platform.python_version(),
        train_seconds=seconds['training'], total_seconds=seconds['total'], cpu_seconds=seconds['cpu'],
        benchmark='was in data/synthetic already' if seconds['benchmark'] < 1 else
                  f'written first, in {seconds["benchmark"]:.0f} s')


CARD_TEMPLATE = """# The shipped model: SCCAN (tiny) on the synthetic benchmark

`sccan_synthetic_tiny.pth` ({size:,} bytes, SHA-256 `{sha256}`) is a
small SCCAN meta-trained on the synthetic few-shot benchmark of this repository
([docs/synthetic.md](../docs/synthetic.md)), shipped so that `make app`, `predict_sccan.py` and
the Python API segment something on a fresh clone, before any download or training.
`tools/dev/make_example_model.py` made it and this card.

**What it knows: only the synthetic benchmark's shapes and colours.** Its backbone is a frozen,
*random* ResNet (no ImageNet weights), and its {trained:,} trained parameters saw nothing but the
procedural images of the benchmark: saturated two-colour textured shapes (ellipses, stars,
rings, ...) on a grey textured background. Given a support of that kind it finds objects of the
same kind, including the 5 classes it never trained on. On photographs, medical or satellite
images its masks mean nothing: for those, use the authors' checkpoints
([docs/weights.md](../docs/weights.md)) or train your own
([docs/training_and_testing.md](../docs/training_and_testing.md)).

## Scores on the held-out classes

Meta-test on the 5 classes of fold 0 (classes 1 to 5), none of which it saw in training:
{episodes} episodes of seed {seed}, 1-shot, as `test_sccan.py` tests; in parentheses the 95 %
bootstrap interval over episodes ([docs/numbers.md](../docs/numbers.md)).

| | % |
| --- | --- |
| mIoU (mean over the 5 classes) | {miou} |
| FB-IoU | {fbiou} |

| class | IoU % | episodes |
| --- | --- | --- |
{classes}

For scale: on this benchmark a predictor that marks every object, whatever the support shows,
scores about 41 % mIoU and the `make demo` model (a random ResNet-50, 1.86 million trained
parameters, 73 px inputs) about 67 % ([docs/synthetic.md](../docs/synthetic.md)).

## The model

SCCAN's architecture at its smallest (`model: tiny`, model.build.MODEL_VARIANTS):
{architecture}. {total:,} values in all, {trained:,} of them trained (the backbone is
frozen). Input canvas 161 × 161 (`val_size`, stored in the checkpoint, which `predict_sccan.py`
and the app read); 1-shot training, any number of supports at prediction time.

Training: `{config}` (the recipe of `make demo`'s config: SGD and AdamW, poly learning rate,
weighted Dice loss; 3 epochs, 261 steps of batch 8) on the 15 base classes of fold 0 of the
benchmark written with seed 0 (1,500 training images; the 600 validation images for the test).

## How it was made

```bash
# needs: a few minutes of CPU; it replaces examples/ and the run folder exp/example_model
python tools/dev/make_example_model.py --overwrite
```

On {cpu}, torch {torch}, Python {python}, one thread: {cpu_seconds:.0f} s of CPU time in all
({total_seconds:.0f} s on the clock, training {train_seconds:.0f} s; the benchmark {benchmark}).
The command trains in one thread with a fixed seed, so one machine and one torch give the same
file run after run (the SHA-256 above); a CPU with another instruction set or another torch may
round differently and give slightly different weights and scores.

## The example

`support.jpg` with `support_mask.png` (0/255), `query1.jpg`, `query2.jpg`: the first three
validation images of the benchmark that show class {example_class}, a class the model never
trained on. The model finds it in both queries, with an IoU of {iou1:.2f} in `query1.jpg` and
{iou2:.2f} in `query2.jpg` (against their label maps; a small model, it may also mark parts of
other textured objects). `synthetic_val.txt` lists them with their label maps (`*_label.png`,
class ids, 255 on object borders) in the benchmark's layout: the app's "Try an example" button
reads them from there.

```bash
python predict_sccan.py --weight examples/sccan_synthetic_tiny.pth \\
    --support examples/support.jpg examples/support_mask.png \\
    --query examples/query1.jpg examples/query2.jpg --out predictions/
```
"""


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    lists = [os.path.join(args.root, name) for name in SYNTHETIC_LISTS.values()]
    check_outputs(outputs(args.out), lists, overwrite=args.overwrite)
    torch.set_num_threads(1)        # the same bytes on the same machine
    if not is_generated(args.root, **BENCHMARK):
        write_benchmark(args.root, **BENCHMARK)
    seconds = {'benchmark': time.time() - start}
    cfg = load_config(os.path.join(REPO, CONFIG), data_opts(args.root))
    with distributed.process_group() as env:
        tick = time.time()
        trained = train(cfg, env, overwrite=True).paths.latest      # this command's own run folder
        seconds['training'] = time.time() - tick
        setup_logging(is_main=env.is_main)
        try:
            report = evaluate_checkpoint(cfg, env, trained, out=os.path.join(cfg.exp_dir, 'test.json'),
                                         overwrite=True)
        finally:
            close_logging()
    model = os.path.join(args.out, MODEL)
    net = ship_model(trained, model)
    write_example(args.root, args.out)
    seconds.update(total=time.time() - start, cpu=time.process_time())
    write_atomic(os.path.join(args.out, CARD),
                 card(report, net, model, seconds, example_ious(model, args.out)))
    print(f'wrote {model} ({os.path.getsize(model):,} bytes, sha256 {sha256_of_file(model)}), the '
          f'example and {os.path.join(args.out, CARD)}: mIoU {100 * report["mean"]["mIoU"]:.1f} on '
          f'the held-out classes, in {seconds["total"]:.0f} s')
    return report


if __name__ == '__main__':
    run_main(main, *distributed.FAILURES)
