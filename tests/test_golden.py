"""The model reproduces episodes run through the authors' code (../shared/golden), in float64."""
import glob
import importlib.util
import os

import pytest
import torch

from model import SCCAN
from model.loss import weighted_dice_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, '..', 'shared', 'golden')
CASES = sorted(glob.glob(os.path.join(GOLDEN, '*.pt')))

pytestmark = pytest.mark.skipif(not CASES, reason=f"no golden episodes at {GOLDEN} (../shared is absent)")


def golden_weights():
    spec = importlib.util.spec_from_file_location('golden_weights', os.path.join(GOLDEN, 'weights.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_model(case, **options):
    net = SCCAN(layers=case['case']['layers']).set_fast_paths(**options)
    net.load_state_dict(golden_weights().make_state_dict(net.state_dict()), strict=True)
    return net.double().eval()


def run_case(path):
    case = torch.load(path, weights_only=False)
    net = golden_model(case)
    captured = {}
    net.transformer.register_forward_hook(lambda m, i, out: captured.update(transformer_out=out))
    import model.sccan as sccan_module
    original_prior = sccan_module.prior_mask

    def recording_prior(*args):
        captured['prior'] = original_prior(*args)
        return captured['prior']
    sccan_module.prior_mask = recording_prior
    try:
        with torch.no_grad():
            logits = net(case['query'].double(), case['support'].double(), case['support_masks'].double())
    finally:
        sccan_module.prior_mask = original_prior
    return case, net, logits, captured


@pytest.fixture(scope='module', params=CASES, ids=[os.path.basename(c) for c in CASES])
def golden_run(request):
    return run_case(request.param)


def test_logits_match(golden_run):
    case, _, logits, _ = golden_run
    assert logits.dtype == torch.float64
    assert (logits - case['logits']).abs().max().item() <= 1e-8


def test_patch_alignment_identical(golden_run):
    case, net, _, _ = golden_run
    indices = net.alignment_indices()
    assert len(indices) == len(case['pam_index']) == 8
    for block, (ours, theirs) in enumerate(zip(indices, case['pam_index'])):
        assert torch.equal(ours, theirs), f"block {block}"


def test_prior_and_transformer_match(golden_run):
    case, _, _, captured = golden_run
    assert (captured['prior'] - case['prior']).abs().max().item() <= 1e-10
    assert (captured['transformer_out'].float() - case['transformer_out']).abs().max().item() <= 1e-5


def test_dice_loss_matches(golden_run):
    case, _, logits, _ = golden_run
    loss = weighted_dice_loss(logits, case['query_mask'].double())
    assert abs(loss.item() - float(case['dice_loss'])) <= 1e-10


FAST_PATHS = {   # name: SCCAN.set_fast_paths switches, each one change to the default
    'fused_attention': {'fused_attention': True},
    'contiguous': {'channels_last': False},
}


@pytest.mark.parametrize('mode', FAST_PATHS)
@pytest.mark.parametrize('path', CASES, ids=[os.path.basename(c) for c in CASES])
def test_fast_paths_match_golden(mode, path):
    case = torch.load(path, weights_only=False)
    net = golden_model(case, **FAST_PATHS[mode])
    with torch.no_grad():
        logits = net(case['query'].double(), case['support'].double(), case['support_masks'].double())
    assert (logits - case['logits']).abs().max().item() <= 1e-8
