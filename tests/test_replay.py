"""Replay's plumbing on the CPU (util/evaluation/replay.py), with the capture strategy that calls
the function on the static buffers: recordings per signature, copies in and out, the padded partial
batch, state changes and the fallback. The CUDA graph itself: tests/test_cuda.py."""
import logging

import pytest
import torch

from model import build_sccan
from tools.dev.random_episodes import random_episode
from util.evaluation.replay import Replay, call_on_buffers, module_state, replayed_forward


def rowwise(x, y):
    """Row i of the output from row i of x (N×3) and y (N×2) only."""
    return x * 2 + y.sum(dim=1, keepdim=True)


def counting(function):
    """`function`, counting its calls in .calls."""
    def counted(*inputs):
        counted.calls += 1
        return function(*inputs)
    counted.calls = 0
    return counted


def test_each_call_replays_its_signatures_recording_on_copies_of_the_inputs():
    replay = Replay(counting(rowwise), call_on_buffers)
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    first = replay(x, y)
    assert torch.equal(first, rowwise(x, y)) and replay.recorded == 1
    x2, y2 = torch.randn(4, 3), torch.randn(4, 2)
    second = replay(x2, y2)
    assert torch.equal(second, rowwise(x2, y2)) and replay.recorded == 1
    assert torch.equal(first, rowwise(x, y))          # copied out: the next replay left it alone
    replay(torch.randn(4, 5), torch.randn(4, 2))      # another shape, another recording
    assert replay.recorded == 2 and len(replay.recordings) == 2


def test_a_smaller_batch_of_independent_rows_replays_in_a_larger_recording():
    replay = Replay(rowwise, call_on_buffers, rows_independent=True)
    replay(torch.randn(4, 3), torch.randn(4, 2))
    x, y = torch.randn(3, 3), torch.randn(3, 2)
    out = replay(x, y)                                # the last, partial batch
    assert out.shape == (3, 3) and torch.equal(out, rowwise(x, y)) and replay.recorded == 1
    x, y = torch.randn(6, 3), torch.randn(6, 2)
    assert torch.equal(replay(x, y), rowwise(x, y)) and replay.recorded == 2   # a larger one
    with pytest.raises(ValueError, match=r'one batch size, got shapes \[\(2, 3\), \(3, 2\)\]'):
        replay(torch.randn(2, 3), torch.randn(3, 2))


def test_without_independent_rows_a_batch_size_is_a_signature():
    replay = Replay(rowwise, call_on_buffers)
    replay(torch.randn(4, 3), torch.randn(4, 2))
    replay(torch.randn(3, 3), torch.randn(3, 2))
    assert replay.recorded == 2


def test_the_least_recently_used_recording_goes_first():
    replay = Replay(rowwise, call_on_buffers, keep=2)
    shapes = {n: (torch.randn(n, 3), torch.randn(n, 2)) for n in (1, 2, 3)}
    for n in (1, 2, 1, 3):
        replay(*shapes[n])
    assert [key[0][0][0] for key in replay.recordings] == [(1, 3), (3, 3)]


def test_a_changed_state_drops_the_recordings():
    state = {'version': 0}
    replay = Replay(rowwise, call_on_buffers, state=lambda: state['version'])
    inputs = torch.randn(2, 3), torch.randn(2, 2)
    replay(*inputs)
    replay(*inputs)
    state['version'] = 1
    replay(*inputs)
    assert replay.recorded == 2 and len(replay.recordings) == 1


@pytest.mark.parametrize('switch', ['tf32_matmul', 'tf32_convolutions', 'cudnn_deterministic',
                                    'deterministic_algorithms'])
def test_a_changed_kernel_switch_records_anew(switch):
    """A graph keeps the kernels it was recorded with: switching TF32 or a deterministic mode
    (process-wide) between two calls must not replay the old kernels."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    flip = {'tf32_matmul': lambda: setattr(torch.backends.cuda.matmul, 'allow_tf32', not saved[0]),
            'tf32_convolutions': lambda: setattr(torch.backends.cudnn, 'allow_tf32', not saved[1]),
            'cudnn_deterministic': lambda: setattr(torch.backends.cudnn, 'deterministic', not saved[2]),
            'deterministic_algorithms': lambda: torch.use_deterministic_algorithms(not saved[3])}
    replay = Replay(rowwise, call_on_buffers)
    inputs = torch.randn(2, 3), torch.randn(2, 2)
    replay(*inputs)
    try:
        flip[switch]()
        replay(*inputs)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.backends.cudnn.deterministic = saved[2]
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
    assert replay.recorded == 2
    replay(*inputs)
    assert replay.recorded == 2       # the first recording again


@pytest.mark.skipif(not hasattr(torch.backends, 'fp32_precision'), reason='PyTorch < 2.9: one TF32 API')
def test_tf32_set_through_pytorchs_newer_settings_records_anew_and_raises_nothing():
    """From PyTorch 2.9 TF32 has two APIs, and the older getters raise once a process has used
    both (a notebook setting cudnn.conv.fp32_precision): a replay must still run, and follow it."""
    conv, allowed = torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.allow_tf32
    replay = Replay(rowwise, call_on_buffers)
    inputs = torch.randn(2, 3), torch.randn(2, 2)
    replay(*inputs)
    try:
        torch.backends.cudnn.conv.fp32_precision = 'ieee' if conv == 'tf32' else 'tf32'
        assert torch.equal(replay(*inputs), rowwise(*inputs)) and replay.recorded == 2
    finally:
        torch.backends.cudnn.allow_tf32 = allowed        # both APIs back in step
        torch.backends.cudnn.conv.fp32_precision = conv


def test_a_failed_recording_falls_back_to_calling_the_function(caplog):
    def refuse(function, buffers):
        raise RuntimeError('operation not permitted when stream is capturing')
    function = counting(rowwise)
    replay = Replay(function, refuse)
    x, y = torch.randn(2, 3), torch.randn(2, 2)
    with caplog.at_level(logging.WARNING, logger='sccan'):
        assert torch.equal(replay(x, y), rowwise(x, y))
        assert torch.equal(replay(x, y), rowwise(x, y))
    assert function.calls == 2 and replay.recorded == 1
    assert caplog.messages == ['not recorded (operation not permitted when stream is capturing): '
                               'calling the function directly for inputs [(2, 3), (2, 2)]']


def test_without_a_strategy_only_cuda_inputs_are_recorded():
    function = counting(rowwise)
    replay = Replay(function)
    replay(torch.randn(2, 3), torch.randn(2, 2))
    assert function.calls == 1 and replay.recorded == 0


def test_the_replayed_forward_is_the_forward_and_follows_the_networks_state():
    torch.manual_seed(0)
    net = build_sccan('tiny')
    forward = replayed_forward(net, capture=call_on_buffers)
    query, support, masks, _ = random_episode(b=2, k=2, size=33)
    with torch.no_grad():
        expected = net(query, support, masks)
    assert not net.training and torch.equal(forward(query, support, masks), expected)
    forward(query, support, masks)
    assert forward.recorded == 1
    net.load_state_dict({k: v.clone() for k, v in net.state_dict().items()})   # BN folded anew
    forward(query, support, masks)
    with torch.no_grad():
        net.transformer.blocks[0].attn_q.q.weight.add_(1.0)     # a training step, in place
    forward(query, support, masks)
    net.set_fast_paths(fused_attention=True)
    forward(query, support, masks)
    assert forward.recorded == 4


def test_module_state_sees_moves_and_mode():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    before = module_state(net)
    net.double()
    moved = module_state(net)
    net.train(False)
    assert len({before, moved, module_state(net)}) == 3
