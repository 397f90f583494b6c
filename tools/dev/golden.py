"""Golden files: what tools/dev/make_golden.py runs through the authors' code and tests/test_golden*.py
run through ours. Both sides take everything from here: the deterministic weights, the episodes
(regenerated from a seed, never stored), the training recipe and the compact parameter view; our
side also its model (`golden_model`) and what it records from inside it (`recording`).

Files (tests/golden/*.pt, `load` / `save`), each with `torch` (version), `note` and
`official_commit` (of their clone, where known):
- <case>.pt, one per CASES entry, their eval-mode float64 outputs for `episode_inputs(case)`:
  `case` (the CASES dict and its name), `logits` B×2×S×S float64, `prior` B×1×64×64 float64 (the
  prior mask after shot averaging), `pam_index` (per SCCA block, B×P int64: the aligned support
  patch of each query patch; P = 64, 81 in the shifted blocks), `transformer_out`
  (`subsample_transformer_out` of the query tokens after the last block and norm0, float32),
  `dice_loss` (float: their Dice loss of the logits against the query mask);
- TRAINING['name'].pt: `training` (the TRAINING dict), `steps` (per step: `iteration`, `loss`,
  `sgd_lr` one per SGD group, `adamw_lr`) and `parameters` (`parameter_view` after the last step).
"""
import contextlib
import math
import zlib

import torch

from model import SCCAN
from util.files.image_io import IGNORE_LABEL
from util.files.writer import write_atomic

# name → episode batch: ResNet depth, shots K, batch B, image side S, seed of the inputs.
CASES = {
    'r50_1shot_57': dict(layers=50, shot=1, batch=1, size=57, seed=1),
    'r50_5shot_57': dict(layers=50, shot=5, batch=1, size=57, seed=2),
    'r101_1shot_65': dict(layers=101, shot=1, batch=2, size=65, seed=3),
    'r50_2shot_97': dict(layers=50, shot=2, batch=2, size=97, seed=4),
}

# Two SGD + AdamW steps as in their train_sccan.train (configs' optimiser values; max_iter is
# short so the poly decay moves visibly): the second step is the first with SGD momentum and a
# second AdamW moment, and a lower learning rate. One episode batch per step, each from its own
# seed; iterations are 1-based, as their current_iter is. Batch 1: a float64 step on the fixed
# 64×64 grid costs ~10 s per episode on a 2-core CPU (batch > 1 is covered by the inference cases).
TRAINING = dict(
    name='training_r50_1shot_57', layers=50, shot=1, batch=1, size=57, step_seeds=(101, 102),
    base_lr=0.005, max_iter=10, power=0.9, index_split=-1, momentum=0.9, weight_decay=1e-4,
    transformer_lr=6e-5, samples_per_tensor=64,
)


# ---- weights ---------------------------------------------------------------------------------
def _generator(key):
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def weight_for(key, shape):
    """A float32 tensor for one state-dict entry, a pure function of its key and shape.

    Backbone 1-D tensors are frozen BN entries: running_var 1..1.5, small running_mean and bias,
    weight 0.8..1.2 except the last BN of each bottleneck (layerN.i.bn3), 0.2..0.3, so each residual
    branch adds little and the 100-layer backbone keeps activations of order one. Convolutions and
    linear layers: He-scaled normal; other 1-D tensors: LayerNorm weights near 1, small biases."""
    g = _generator(key)
    leaf = key.rsplit('.', 1)[-1]
    in_backbone = key.startswith('backbone.')
    if leaf == 'running_var':
        return 1.0 + 0.5 * torch.rand(shape, generator=g)
    if leaf == 'running_mean':
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1 and leaf == 'weight':
        last_bn = in_backbone and '.layer' in key and key.endswith('.bn3.weight')
        low, width = (0.2, 0.1) if last_bn else (0.8, 0.4)
        return low + width * torch.rand(shape, generator=g)
    if len(shape) == 1:
        return (0.05 if in_backbone else 0.02) * torch.randn(shape, generator=g)
    gain = 2.0 if len(shape) == 4 else 1.0          # ReLU convolutions; linear layers
    return math.sqrt(gain / math.prod(shape[1:])) * torch.randn(shape, generator=g)


def make_state_dict(reference):
    """Same keys, shapes and dtypes as the state dict `reference`; floating tensors from
    `weight_for`, others copied."""
    return {key: weight_for(key, tuple(value.shape)).to(value.dtype) if value.is_floating_point()
            else value.clone() for key, value in reference.items()}


def golden_model(case, state_dict=make_state_dict, **fast_paths):
    """Our SCCAN for a case (CASES or TRAINING; any number of shots) as a bare `SCCAN(...)` in a
    notebook gets it, with `state_dict(reference)` weights loaded strictly, float64, eval mode.

    Args:
        case: holds 'layers'.
        state_dict: weights for a state dict of the model's keys and shapes.
        **fast_paths: SCCAN.set_fast_paths switches; none: the model's defaults.
    """
    net = SCCAN(layers=case['layers']).set_fast_paths(**fast_paths)
    net.load_state_dict(state_dict(net.state_dict()), strict=True)
    return net.double().eval()


def _keep_output(container, key):
    def hook(module, inputs, output):
        container[key] = output
    return hook


@contextlib.contextmanager
def recording(net):
    """Forward hooks on our SCCAN `net` while inside; yields the dict they fill with what the
    golden files keep from its last forward: 'prior' (B×1×S×S, after shot averaging),
    'pam_index' (per SCCA block, B×P aligned support patch per query patch) and
    'transformer_out' (B×C×S×S, query tokens after norm0)."""
    captured = {'pam_index': [None] * len(net.transformer.blocks)}
    hooks = [net.prior.register_forward_hook(_keep_output(captured, 'prior')),
             net.transformer.register_forward_hook(_keep_output(captured, 'transformer_out'))]
    hooks += [block.align.register_forward_hook(_keep_output(captured['pam_index'], i))
              for i, block in enumerate(net.transformer.blocks)]
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


# ---- episodes --------------------------------------------------------------------------------
def _label(g, size):
    """S×S float64 label: 0 background, 1 a random rectangle (a quarter to two thirds of the side),
    255 on a random row and column band, so that some 8×8 patches of the 64×64 grid hold
    foreground and others none, and ignore pixels take part."""
    label = torch.zeros(size, size, dtype=torch.float64)
    h, w = (int(v) for v in torch.randint(size // 4, 2 * size // 3, (2,), generator=g))
    top, left = (int(v) for v in torch.randint(0, size - max(h, w), (2,), generator=g))
    label[top:top + h, left:left + w] = 1
    row, col = (int(v) for v in torch.randint(0, size - 2, (2,), generator=g))
    label[row:row + 2] = IGNORE_LABEL
    label[:, col:col + 2] = IGNORE_LABEL
    return label


def episode_inputs(case, seed=None):
    """Inputs for `case` (a CASES or TRAINING dict; `seed` overrides case['seed']), float64:
    query B×3×S×S, support B×K×3×S×S (normalised-image scale), support_masks B×K×S×S and
    query_mask B×S×S of 0/1/255."""
    b, k, s = case['batch'], case['shot'], case['size']
    g = torch.Generator().manual_seed(case['seed'] if seed is None else seed)
    query = torch.randn(b, 3, s, s, generator=g, dtype=torch.float64)
    support = torch.randn(b, k, 3, s, s, generator=g, dtype=torch.float64)
    support_masks = torch.stack([torch.stack([_label(g, s) for _ in range(k)]) for _ in range(b)])
    query_mask = torch.stack([_label(g, s) for _ in range(b)])
    return dict(query=query, support=support, support_masks=support_masks, query_mask=query_mask)


def training_batches():
    """The episode batch of each training step, in order."""
    return [episode_inputs(TRAINING, seed) for seed in TRAINING['step_seeds']]


def subsample_transformer_out(out):
    """B×C×64×64 → B×C/2×16×16 float32 (every 2nd channel, every 4th row and column): enough to
    locate a difference, small enough to commit."""
    return out[:, ::2, ::4, ::4].float().contiguous()


# ---- training result -------------------------------------------------------------------------
def learnable_parameters(net):
    """{name: float64 copy} of the parameters that train (requires_grad)."""
    return {name: p.detach().clone().double() for name, p in net.named_parameters() if p.requires_grad}


def sample_index(key, numel):
    """Up to TRAINING['samples_per_tensor'] flat indices of a tensor, a pure function of its key."""
    count = min(numel, TRAINING['samples_per_tensor'])
    return torch.randperm(numel, generator=_generator(key))[:count]


def parameter_view(initial, final):
    """Compact record of a training run, for {name: tensor} before and after it: per tensor the
    values at `sample_index` and the sum and sum of squares of (final − initial), all float64."""
    view = {}
    for name, before in initial.items():
        after = final[name].double().flatten()
        delta = after - before.double().flatten()
        view[name] = dict(sample=after[sample_index(name, after.numel())],
                          delta_sum=delta.sum(), delta_sq=(delta ** 2).sum())
    return view


# ---- files -----------------------------------------------------------------------------------
def save(path, payload):
    write_atomic(path, lambda f: torch.save(payload, f))


def load(path):
    """A golden file: dicts, lists, numbers, strings and tensors only."""
    return torch.load(path, weights_only=True)
