"""seed_deterministic (util/determinism.py) on the CPU: the settings inside and restored after,
the cuBLAS variable before any CUDA work in every script, and the deterministic formulation of
the bilinear resizes that training differentiates (a GPU takes it; here it is forced on the CPU)."""
import logging
import os

import pytest
import torch
import torch.nn.functional as F

import test_sccan
import train_sccan
from helpers import TINY
from model import build_sccan
from tools import demo
from tools.dev.random_episodes import random_episode
from util import distributed
from util.determinism import (CUBLAS_VARIABLE, CUBLAS_WORKSPACE, DeterministicResizes, prepare_process,
                              bilinear_resize, deterministic)
from util.episodes import TRAINING_INPUTS
from util.precision import Precision
from util.optim import forward_backward
from util.seeding import without_dropout

SYNTHETIC = os.path.join('config', 'synthetic', 'synthetic_split0_resnet50.yaml')


@pytest.mark.parametrize('shape, size', [((13, 13), (32, 32)), ((32, 32), (97, 97)),
                                         ((7, 5), (3, 11)), ((5, 4), (1, 1)), ((1, 4), (6, 6))])
def test_bilinear_resize_is_interpolate_in_values_and_gradients(shape, size):
    x = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, *size, dtype=torch.float64)
    theirs = F.interpolate(x, size=size, mode='bilinear', align_corners=True)
    ours = bilinear_resize(x, size)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-13)
    grad_theirs, = torch.autograd.grad((theirs * upstream).sum(), x)
    grad_ours, = torch.autograd.grad((ours * upstream).sum(), x)
    assert torch.allclose(grad_ours, grad_theirs, rtol=0, atol=1e-13)


def test_the_mode_takes_over_only_differentiated_bilinear_resizes_on_its_devices():
    x = torch.randn(1, 2, 5, 5, requires_grad=True).contiguous(memory_format=torch.channels_last)
    with DeterministicResizes(['cpu']) as mode:
        out = F.interpolate(x, size=(9, 9), mode='bilinear', align_corners=True)
        assert mode.resized == 1 and out.is_contiguous(memory_format=torch.channels_last)
        F.interpolate(x.detach(), size=(9, 9), mode='bilinear', align_corners=True)
        F.interpolate(x, size=(9, 9), mode='bilinear', align_corners=False)
        F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
        F.interpolate(x, size=(9, 9), mode='nearest')
        with torch.no_grad():
            F.interpolate(x, size=(9, 9), mode='bilinear', align_corners=True)
        assert mode.resized == 1
    with DeterministicResizes() as mode:                 # the GPU's only
        F.interpolate(x, size=(9, 9), mode='bilinear', align_corners=True)
    assert mode.resized == 0


def test_a_training_step_under_the_mode_has_the_same_gradients():
    """The SCCAN's trainable resizes (reduced features, logits), recomputed SCCA blocks and all:
    the step's gradients are those of PyTorch's interpolation, in float64."""
    torch.manual_seed(0)
    net = without_dropout(build_sccan('tiny')).double().train()
    net.set_fast_paths(recompute=True)
    inputs = dict(zip(TRAINING_INPUTS, (t.double() for t in random_episode(size=33, seed=3))))

    def gradients():
        forward_backward(net, inputs, Precision('cpu'), Precision('cpu').grad_scaler(), 'cpu')
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    plain = gradients()
    with DeterministicResizes(['cpu']) as mode:
        resized = gradients()
    assert mode.resized == 3             # query and support features, logits
    assert resized.keys() == plain.keys()
    assert all(torch.allclose(resized[n], plain[n], rtol=1e-9, atol=1e-12) for n in plain)


def settings():
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


def test_deterministic_applies_its_settings_and_restores_the_previous_ones():
    before = settings()
    torch.backends.cudnn.benchmark = True           # a caller's own choice, to be restored
    try:
        with deterministic(False):
            assert settings()[:3] == before[:3] and torch.backends.cudnn.benchmark
        with deterministic(True, 'cpu'):                # no resizes taken over on a CPU
            assert settings() == (True, True, True, False)
            assert torch.overrides._get_current_function_mode() is None
        with pytest.raises(RuntimeError, match='inside'):
            with deterministic(True, 'cuda:0'):
                assert settings() == (True, True, True, False)
                assert isinstance(torch.overrides._get_current_function_mode(),
                                  DeterministicResizes)
                raise RuntimeError('inside')
        assert settings() == before[:3] + (True,)
        assert torch.overrides._get_current_function_mode() is None
    finally:
        torch.backends.cudnn.benchmark = before[3]


class StopBeforeCuda(Exception):
    """Raised where a script would open its process group (and first touch CUDA)."""


@pytest.mark.parametrize('script', ['train_sccan', 'test_sccan', 'demo'])
@pytest.mark.parametrize('flag', [True, False])
def test_the_scripts_set_the_cublas_variable_before_any_cuda_work(script, flag, monkeypatch,
                                                                   tmp_path):
    """The variable must be in the environment before the process first uses cuBLAS: in every
    script (and so in every torchrun worker), before its process group and model exist."""
    monkeypatch.setenv(CUBLAS_VARIABLE, 'set')      # so that monkeypatch removes what the script sets
    monkeypatch.delenv(CUBLAS_VARIABLE)
    seen = []

    def process_group(*args, **kwargs):
        seen.append(os.environ.get(CUBLAS_VARIABLE))
        raise StopBeforeCuda
    monkeypatch.setattr(distributed, 'process_group', process_group)
    opts = ['--opts', *TINY, 'seed_deterministic', str(flag), 'exp_dir', str(tmp_path)]
    main, argv = {'train_sccan': (train_sccan.main, ['--config', SYNTHETIC, *opts]),
                  'test_sccan': (test_sccan.main, ['--config', SYNTHETIC, *opts]),
                  'demo': (demo.main, ['--root', str(tmp_path / 'data'), *opts])}[script]
    with pytest.raises(StopBeforeCuda):
        main(argv)
    assert seen == [CUBLAS_WORKSPACE if flag else None]


@pytest.mark.parametrize('cuda_used, already_set, warned', [
    (False, False, False), (True, False, True), (True, True, False)])
def test_the_cublas_variable_set_after_cuda_work_warns(cuda_used, already_set, warned, monkeypatch,
                                                       caplog):
    """A notebook that used the GPU before training with seed_deterministic: the variable comes
    too late for cuBLAS (which keeps its workspace), and says so; one the user set stays."""
    monkeypatch.setenv(CUBLAS_VARIABLE, ':16:8')
    if not already_set:
        monkeypatch.delenv(CUBLAS_VARIABLE)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: cuda_used)
    with caplog.at_level(logging.WARNING, logger='sccan'):
        prepare_process(True)
    assert os.environ[CUBLAS_VARIABLE] == (':16:8' if already_set else CUBLAS_WORKSPACE)
    assert caplog.messages == ([f'seed_deterministic: this process used CUDA before {CUBLAS_VARIABLE} '
                                'was set, so cuBLAS may keep a workspace that is not deterministic; '
                                f'set {CUBLAS_VARIABLE}={CUBLAS_WORKSPACE} in the environment before '
                                'starting Python'] if warned else [])


def test_bilinear_resize_in_half_precision_is_interpolate_up_to_its_rounding():
    x = torch.randn(1, 2, 13, 13).to(torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = bilinear_resize(x, (32, 32))
    theirs = F.interpolate(x, size=(32, 32), mode='bilinear', align_corners=True)
    assert out.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits: within one unit of the last (2**-7) of PyTorch's values
    assert torch.allclose(out.float(), theirs.float(), rtol=2 ** -7, atol=1e-6)
