"""Our training code follows the authors' for a few float64 steps.

tests/golden/training_*.pt holds, from their train_sccan.train (tools/dev/make_golden.py), the loss and
SGD lr of every step and a compact view of the learnable parameters after the last one; both runs
start from tools/dev/golden.py weights with every dropout off. Ours runs through util.optim: the
optimisers, the schedule and train_sccan.py's step (forward_backward, optimizer_step). It stores
the SCCA blocks' activations (recompute off; on is the CPU's default): recomputing them gives
the same gradients (tests/test_fast_paths.py) and would add a quarter to this test's time.
Tolerance: 1e-10 absolute on losses, lrs, parameter samples and per-tensor sums of the parameter
change (all of order one or below).
"""
import os

import pytest
import torch

from tools.dev import golden
from util.config import default_config
from util.optim import apply_schedule, build_optimizers, forward_backward, optimizer_step
from util.precision import Precision
from util.seeding import without_dropout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.paper_size      # every core (tests/conftest.py)
TOLERANCE = 1e-10
RECIPE = golden.TRAINING


def run_ours():
    """Our run of RECIPE → (per step {'loss', 'sgd_lr', 'adamw_lr'}, golden.parameter_view)."""
    net = without_dropout(golden.golden_model(RECIPE, recompute=False)).train()
    cfg = default_config().replace(
        base_lr=RECIPE['base_lr'], power=RECIPE['power'], index_split=RECIPE['index_split'],
        momentum=RECIPE['momentum'], weight_decay=RECIPE['weight_decay'],
        transformer_lr=RECIPE['transformer_lr'], warmup=False)
    sgd, adamw = build_optimizers(net, cfg)
    precision = Precision('cpu')
    scaler = precision.grad_scaler()
    initial = golden.learnable_parameters(net)
    steps = []
    for iteration, batch in enumerate(golden.training_batches(), start=1):
        apply_schedule(sgd, cfg, iteration, RECIPE['max_iter'], iters_per_epoch=RECIPE['max_iter'])
        loss = forward_backward(net, batch, precision, scaler, torch.device('cpu'))
        optimizer_step(scaler, (sgd, adamw))
        steps.append(dict(loss=loss.item(), sgd_lr=[g['lr'] for g in sgd.param_groups],
                          adamw_lr=[g['lr'] for g in adamw.param_groups]))
    return steps, golden.parameter_view(initial, golden.learnable_parameters(net))


@pytest.fixture(scope='module')
def runs():
    """(their golden payload, our steps, our parameter view)."""
    theirs = golden.load(os.path.join(ROOT, 'tests', 'golden', f"{RECIPE['name']}.pt"))
    assert theirs['training'] == RECIPE, 'regenerate with tools/dev/make_golden.py'
    return (theirs, *run_ours())


def test_losses_match(runs):
    theirs, steps, _ = runs
    assert len(steps) == len(theirs['steps'])
    for i, (ours, expected) in enumerate(zip(steps, theirs['steps'])):
        assert abs(ours['loss'] - expected['loss']) <= TOLERANCE, f"step {i + 1}"


def test_learning_rates_match(runs):
    """Group by group: both SGDs have one group per module, in their OneModel.get_optim order."""
    theirs, steps, _ = runs
    for i, (ours, expected) in enumerate(zip(steps, theirs['steps'])):
        assert len(ours['sgd_lr']) == len(expected['sgd_lr']) == 8, f"step {i + 1}"
        assert all(abs(a - b) <= TOLERANCE
                   for a, b in zip(ours['sgd_lr'], expected['sgd_lr'])), f"step {i + 1}"
        assert ours['adamw_lr'] == expected['adamw_lr'], f"step {i + 1}"


def test_learnable_parameters_are_theirs(runs):
    theirs, _, ours = runs
    assert set(ours) == set(theirs['parameters'])


@pytest.mark.parametrize('field', ['sample', 'delta_sum', 'delta_sq'])
def test_parameters_after_training_match(runs, field):
    theirs, _, ours = runs
    worst = {name: (ours[name][field] - expected[field]).abs().max().item()
             for name, expected in theirs['parameters'].items()}
    name = max(worst, key=worst.get)
    assert worst[name] <= TOLERANCE, f"{name}: {field} differs by {worst[name]:.3g}"
