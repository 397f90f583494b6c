"""Our SCCAN reproduces episodes run through the authors' code in float64.

tests/golden/<case>.pt hold their outputs (tools/dev/make_golden.py); the inputs and weights are
regenerated from tools/dev/golden.py. Tolerances (max abs difference): logits 1e-8, prior 1e-10, Dice
loss 1e-10, transformer output 1e-5 (stored as float32), patch alignment exact.
"""
import glob
import importlib.util
import os

import pytest
import torch

from model.loss import weighted_dice_loss
from tools.dev import golden
from util.episodes import TRAINING_INPUTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN_DIR = os.path.join(ROOT, 'tests', 'golden')
pytestmark = pytest.mark.paper_size      # every core (tests/conftest.py)


def run_ours(net, inputs):
    """One eval forward without autograd → (logits B×2×S×S, golden.recording's dict)."""
    with torch.no_grad(), golden.recording(net) as captured:
        logits = net(inputs['query'], inputs['support'], inputs['support_masks'])
    return logits, captured


def max_abs(a, b):
    return (a - b).abs().max().item()


def assert_alignment_equal(indices, expected):
    assert len(indices) == len(expected) == 8
    for block, (ours, theirs) in enumerate(zip(indices, expected)):
        assert torch.equal(ours, theirs), f"block {block}"


# ---- committed golden files --------------------------------------------------------------------
def load_case(name):
    """(golden payload, float64 inputs) of a CASES entry; checks the file was made for it."""
    expected = golden.load(os.path.join(GOLDEN_DIR, f'{name}.pt'))
    assert expected['case'] == dict(golden.CASES[name], name=name), 'regenerate with tools/dev/make_golden.py'
    return expected, golden.episode_inputs(golden.CASES[name])


def test_golden_files_are_those_of_the_cases():
    files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(GOLDEN_DIR, '*.pt'))}
    assert files == set(golden.CASES) | {golden.TRAINING['name']}


@pytest.fixture(scope='module', params=list(golden.CASES))
def golden_run(request):
    expected, inputs = load_case(request.param)
    logits, captured = run_ours(golden.golden_model(golden.CASES[request.param]), inputs)
    return expected, inputs, logits, captured


def test_logits_match(golden_run):
    expected, _, logits, _ = golden_run
    assert logits.dtype == torch.float64
    assert max_abs(logits, expected['logits']) <= 1e-8


def test_patch_alignment_identical(golden_run):
    expected, _, _, captured = golden_run
    assert_alignment_equal(captured['pam_index'], expected['pam_index'])


def test_prior_matches(golden_run):
    expected, _, _, captured = golden_run
    assert max_abs(captured['prior'], expected['prior']) <= 1e-10


def test_transformer_out_matches(golden_run):
    expected, _, _, captured = golden_run
    ours = golden.subsample_transformer_out(captured['transformer_out'])
    assert max_abs(ours, expected['transformer_out']) <= 1e-5


def test_dice_loss_matches(golden_run):
    expected, inputs, logits, _ = golden_run
    loss = weighted_dice_loss(logits, inputs['query_mask'])
    assert abs(loss.item() - expected['dice_loss']) <= 1e-10


FAST_PATHS = {   # name: SCCAN.set_fast_paths switches, each one change to the model's defaults
    'fused_attention': {'fused_attention': True},
    'contiguous': {'channels_last': False},
}


# The 5-shot case: one shot, a deeper backbone or a larger batch runs the same code paths (the
# shots are averaged in one tensor op); tests/test_fast_paths.py compares each fast path with the
# plain one on the tiny model.
FAST_PATH_CASES = ['r50_5shot_57']


@pytest.mark.parametrize('mode', FAST_PATHS)
@pytest.mark.parametrize('name', FAST_PATH_CASES)
def test_fast_paths_match_golden(mode, name):
    expected, inputs = load_case(name)
    logits, _ = run_ours(golden.golden_model(golden.CASES[name], **FAST_PATHS[mode]), inputs)
    assert max_abs(logits, expected['logits']) <= 1e-8


# ---- optional cross-check: an independent set of golden episodes, where present -----------------
# A sibling folder ../shared/golden (not part of this repository) may hold episodes made by other
# means, with their own weights.py; they are compared when present and skipped otherwise.
SHARED_DIR = os.path.join(ROOT, '..', 'shared', 'golden')
SHARED_CASES = sorted(glob.glob(os.path.join(SHARED_DIR, '*.pt'))) or [
    pytest.param(None, marks=pytest.mark.skip(reason=f'optional cross-check: no episodes at {SHARED_DIR}'))]


def shared_weights():
    spec = importlib.util.spec_from_file_location('shared_golden_weights',
                                                  os.path.join(SHARED_DIR, 'weights.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('path', SHARED_CASES, ids=lambda p: os.path.basename(p) if p else 'absent')
def test_shared_golden_cross_check(path):
    expected = torch.load(path, weights_only=False)
    net = golden.golden_model(expected['case'], shared_weights().make_state_dict)
    inputs = {key: expected[key].double() for key in TRAINING_INPUTS}
    logits, captured = run_ours(net, inputs)
    assert max_abs(logits, expected['logits']) <= 1e-8
    assert_alignment_equal(captured['pam_index'], expected['pam_index'])
    assert max_abs(captured['prior'], expected['prior']) <= 1e-10
    assert abs(weighted_dice_loss(logits, inputs['query_mask']).item()
               - float(expected['dice_loss'])) <= 1e-10
