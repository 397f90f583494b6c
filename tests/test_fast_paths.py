"""Optimised paths compute what the plain ones do: folded frozen BN, activation recomputation,
fused attention, channels-last and torch.compile."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import build_sccan
from model.backbone import BN_EPS, conv_bn, conv_bn_forward
from model.fast_paths import AUTO, fused_attention_on, switch_on
from model.scca import WindowAttention

from tools.dev import golden
from tools.dev.random_episodes import random_episode as episode
from util.determinism import deterministic
from util.evaluation.replay import module_state
from util.experiment import compile_model
from util.seeding import without_dropout



def random_bn_state(bn, generator):
    channels = bn.weight.numel()
    return {'weight': torch.randn(channels, generator=generator),
            'bias': torch.randn(channels, generator=generator),
            'running_mean': torch.randn(channels, generator=generator),
            'running_var': torch.rand(channels, generator=generator) + 0.1}


def conv_then_batchnorm(conv, bn, x):
    return F.batch_norm(conv(x), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        training=False, eps=BN_EPS)


def test_folded_conv_bn_equals_conv_then_batchnorm():
    g = torch.Generator().manual_seed(0)
    pair = nn.Sequential(*conv_bn(4, 6, 3, stride=2, dilation=2)).double()
    pair[1].load_state_dict(random_bn_state(pair[1], g))
    x = torch.randn(2, 4, 11, 11, generator=g, dtype=torch.float64)
    expected = conv_then_batchnorm(*pair, x)
    assert torch.allclose(conv_bn_forward(*pair, x), expected, rtol=0, atol=1e-12)


def test_folded_weights_follow_loads_and_casts():
    g = torch.Generator().manual_seed(1)
    pair = nn.Sequential(*conv_bn(3, 5, 1))
    x = torch.randn(1, 3, 4, 4, generator=g)
    first = conv_bn_forward(*pair, x)                       # folds the initial (identity) BN
    pair.load_state_dict({'0.weight': torch.randn(5, 3, 1, 1, generator=g),
                          **{f'1.{k}': v for k, v in random_bn_state(pair[1], g).items()}})
    after_load = conv_bn_forward(*pair, x)
    assert not torch.allclose(first, after_load)
    assert torch.allclose(after_load, conv_then_batchnorm(*pair, x), atol=1e-5)
    pair.double()
    after_cast = conv_bn_forward(*pair, x.double())
    assert after_cast.dtype == torch.float64
    assert torch.allclose(after_cast, conv_then_batchnorm(*pair, x.double()), rtol=0, atol=1e-12)


@pytest.mark.parametrize('change', ['to', 'float', 'load_state_dict'])
def test_moving_casting_or_loading_drops_the_folded_weights(change):
    """On a GPU the caching allocator may hand a moved model the very blocks its old tensors had,
    at version 0 again, so the (address, version) key alone could take new weights for the old
    ones (model.cpu(), load_state_dict, model.cuda()). A move, cast or load (even to where the
    model is) drops the folded weights, and a recording of the model (module_state) follows."""
    pair = nn.Sequential(*conv_bn(3, 5, 1))
    x = torch.randn(1, 3, 4, 4)
    conv_bn_forward(*pair, x)
    bn, resets, state = pair[1], pair[1].fold_resets, module_state(pair)
    assert bn._folded
    {'to': lambda: pair.to('cpu'), 'float': pair.float,
     'load_state_dict': lambda: pair.load_state_dict(pair.state_dict())}[change]()
    assert not bn._folded and bn.fold_resets == resets + 1 and module_state(pair) != state
    assert torch.allclose(conv_bn_forward(*pair, x), conv_then_batchnorm(*pair, x), atol=1e-5)


def test_under_autocast_the_folded_weights_are_cast_once_to_the_same_values():
    """bf16 autocast: the convolution gets the folded weights already in bf16, held between
    calls (no cast per call), and computes bit for bit what autocast's own cast gives."""
    g = torch.Generator().manual_seed(2)
    pair = nn.Sequential(*conv_bn(4, 6, 3))
    pair[1].load_state_dict(random_bn_state(pair[1], g))
    x = torch.randn(2, 4, 9, 9, generator=g)
    weight, bias = pair[1].folded_into(pair[0])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        expected = F.conv2d(x, weight, bias, padding=1)         # autocast casts at the call
        out = conv_bn_forward(*pair, x)
        held = pair[1].folded_into(pair[0], torch.bfloat16)
        assert conv_bn_forward(*pair, x).dtype == torch.bfloat16
    assert all(t.dtype == torch.bfloat16 for t in held)
    assert held[0] is pair[1].folded_into(pair[0], torch.bfloat16)[0]     # kept, not recast
    assert torch.equal(out, expected)


def test_folding_leaves_the_state_dict_alone():
    net = build_sccan('tiny').eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net(*episode())
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def saved_bytes(net, inputs):
    """(output of net(*inputs) with autograd on, bytes autograd keeps for the backward pass)."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor
    torch.manual_seed(0)                                    # the same dropout draws in every run
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = net(*inputs)
    return out, sum(saved)


def loss_gradients_and_saved_bytes(net, inputs):
    (_, loss), stored = saved_bytes(net, inputs)
    net.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), grads, stored


def test_recompute_gives_the_same_gradients_and_stores_less():
    torch.manual_seed(0)
    plain = build_sccan('tiny').set_fast_paths(recompute=False).train()
    recomputed = build_sccan('tiny').set_fast_paths(recompute=True).train()
    recomputed.load_state_dict(plain.state_dict())
    inputs = episode()
    loss_a, grads_a, stored_a = loss_gradients_and_saved_bytes(plain, inputs)
    loss_b, grads_b, stored_b = loss_gradients_and_saved_bytes(recomputed, inputs)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-7), name
    # What autograd keeps for the backward pass: the SCCA blocks hold most of it.
    assert stored_b < 0.5 * stored_a


def test_recompute_is_off_in_eval():
    """In eval mode with autograd on (e.g. for saliency), recompute=True stores what
    recompute=False stores: nothing is rerun."""
    plain = build_sccan('tiny').set_fast_paths(recompute=False).eval()
    recomputed = build_sccan('tiny').set_fast_paths(recompute=True).eval()
    recomputed.load_state_dict(plain.state_dict())
    inputs = episode()[:3]
    logits_a, stored_a = saved_bytes(plain, inputs)
    logits_b, stored_b = saved_bytes(recomputed, inputs)
    assert stored_a > 0 and stored_b == stored_a
    assert torch.equal(logits_a, logits_b)


@pytest.mark.parametrize('value, on_cuda, auto_on_cuda, expected', [
    (True, False, True, True), (False, True, True, False),
    ('auto', True, True, True), ('auto', False, True, False),      # fused attention
    ('auto', True, False, False), ('auto', False, False, True)])   # recomputation
def test_a_switch_set_to_auto_follows_the_device(value, on_cuda, auto_on_cuda, expected):
    assert switch_on(value, on_cuda, auto_on_cuda) is expected


@pytest.mark.parametrize('value, on_cuda, seed_deterministic, grad, expected', [
    ('auto', True, False, True, True), ('auto', True, False, False, True),
    ('auto', True, True, True, False),      # training under seed_deterministic: the plain backward
    ('auto', True, True, False, True),      # the fused forward is deterministic
    ('auto', False, False, True, False), ('auto', False, True, False, False),
    (True, True, True, True, True), (True, False, True, True, True), (False, True, False, False, False)])
def test_fused_attention_is_plain_in_training_under_seed_deterministic(value, on_cuda, seed_deterministic,
                                                                        grad, expected):
    """PyTorch's fused attention kernels have no deterministic backward under warn-only
    deterministic algorithms (what seed_deterministic turns on): 'auto' takes the plain attention
    wherever autograd records there, on CUDA as on the CPU; an explicit True is obeyed."""
    with deterministic(seed_deterministic, 'cuda:0' if on_cuda else 'cpu'), torch.set_grad_enabled(grad):
        assert fused_attention_on(value, on_cuda) is expected
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize('value', ['yes', 1, 0, 'Auto'])
def test_set_fast_paths_refuses_other_values(value):
    with pytest.raises(ValueError, match=f"recompute must be True, False or 'auto', got {value!r}"):
        build_sccan('tiny').set_fast_paths(recompute=value)
    with pytest.raises(ValueError, match=f"channels_last must be True or False, got {value!r}"):
        build_sccan('tiny').set_fast_paths(channels_last=value)


def test_a_default_model_takes_the_cpu_paths_on_the_cpu():
    """A bare model ('auto' switches) recomputes in training and attends without the fused kernel
    on the CPU: what it stores and computes is what the explicit CPU switches give."""
    torch.manual_seed(0)
    default = build_sccan('tiny').train()
    assert default.fast_paths == {'channels_last': True, 'recompute': AUTO, 'fused_attention': AUTO}
    explicit = build_sccan('tiny').set_fast_paths(recompute=True, fused_attention=False).train()
    explicit.load_state_dict(default.state_dict())
    inputs = episode()
    loss_a, grads_a, stored_a = loss_gradients_and_saved_bytes(default, inputs)
    loss_b, grads_b, stored_b = loss_gradients_and_saved_bytes(explicit, inputs)
    assert torch.equal(loss_a, loss_b) and stored_a == stored_b
    assert all(torch.equal(grads_a[name], grads_b[name]) for name in grads_a)


def attention_pair(dim=16, heads=4, seed=0):
    torch.manual_seed(seed)
    plain = WindowAttention(dim, heads).double()
    fused = WindowAttention(dim, heads).double()
    fused.load_state_dict(plain.state_dict())
    fused.fused = True
    return plain, fused


@pytest.mark.parametrize('cross', [False, True], ids=['self-only', 'self+cross'])
def test_fused_attention_equals_plain_with_gradients(cross):
    plain, fused = attention_pair()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 9, 16, generator=g, dtype=torch.float64, requires_grad=True)
    keys = torch.cat([x, 3 * torch.randn(6, 9, 16, generator=g, dtype=torch.float64)], dim=1) if cross else x
    out_plain, out_fused = plain(x, keys), fused(x, keys)
    # The 1e-7 cosine guard sits on each norm instead of on their product: rounding-level change.
    assert torch.allclose(out_plain, out_fused, rtol=0, atol=1e-6)
    grad_plain, = torch.autograd.grad(out_plain.square().sum(), x)
    grad_fused, = torch.autograd.grad(out_fused.square().sum(), x)
    assert torch.allclose(grad_plain, grad_fused, rtol=0, atol=1e-5)


def test_fused_attention_model_agrees_with_plain_model():
    torch.manual_seed(0)
    plain = build_sccan('tiny').eval()              # 'auto': plain attention on the CPU
    fused = build_sccan('tiny').set_fast_paths(fused_attention=True).eval()
    fused.load_state_dict(plain.state_dict())
    assert fused.fast_paths['fused_attention'] is True and plain.fast_paths['fused_attention'] == 'auto'
    inputs = episode(k=2, seed=1)[:3]
    with torch.no_grad():
        a, b = plain(*inputs), fused(*inputs)
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_channels_last_model_agrees_with_contiguous_model():
    torch.manual_seed(0)
    plain = build_sccan('tiny').set_fast_paths(channels_last=False).eval()
    fast = build_sccan('tiny').eval()           # channels-last by default
    fast.load_state_dict(plain.state_dict())
    query, support, masks = episode(seed=2)[:3]
    with torch.no_grad():
        a, b = plain(query, support, masks), fast(query, support, masks)
    assert fast.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.backbone.body.conv1.weight.is_contiguous()
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.equal(a.argmax(1), b.argmax(1))


def compiled_twins():
    """An eager tiny SCCAN without dropout and a copy whose backbone and SCCA transformer are
    compiled each into one graph (fullgraph: a graph break is an error) by compile_model, as
    `compile: True` compiles them. The aot_eager backend traces forward and backward as the default one does
    but runs the traced graph without generating kernels: it checks what our code decides (one
    graph, in-place ops, recomputation, hooks) in seconds; tests/test_cuda.py compiles with the
    default backend on a GPU."""
    torch._dynamo.reset()        # no graphs of other models (recompile limit)
    torch.manual_seed(0)
    eager, compiled = without_dropout(build_sccan('tiny')), without_dropout(build_sccan('tiny'))
    compiled.load_state_dict(eager.state_dict())
    compile_model(compiled, fullgraph=True, backend='aot_eager')
    return eager, compiled


def test_compiled_model_is_one_graph_per_module_and_trains_as_the_eager_one():
    eager, compiled = compiled_twins()
    inputs = episode(seed=2)
    loss_a, grads_a, _ = loss_gradients_and_saved_bytes(eager.train(), inputs)   # recomputed blocks
    loss_b, grads_b, _ = loss_gradients_and_saved_bytes(compiled.train(), inputs)
    assert torch.allclose(loss_a, loss_b, rtol=1e-5) and grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6), name


def test_forward_hooks_record_inside_the_compiled_transformer():
    """The golden tests' hooks (golden.recording) inside a transformer compiled into one graph
    record what they record in the eager model."""
    eager, compiled = (net.eval() for net in compiled_twins())
    query, support, masks = episode(seed=3)[:3]
    with torch.no_grad(), golden.recording(eager) as expected, golden.recording(compiled) as captured:
        assert torch.allclose(eager(query, support, masks), compiled(query, support, masks), atol=1e-5)
    assert len(captured['pam_index']) == 2
    for ours, theirs in zip(captured['pam_index'], expected['pam_index']):
        assert torch.equal(ours, theirs)
    assert torch.allclose(captured['prior'], expected['prior'], atol=1e-6)
    assert torch.allclose(captured['transformer_out'], expected['transformer_out'], atol=1e-5)


def test_channels_last_survives_loading_moving_and_casting(tmp_path):
    """The layout is the model's own default: a state dict loaded into it, .double() and .to()
    keep it, so a bare SCCAN in a notebook runs the fast path."""
    net = build_sccan('tiny')
    net.load_state_dict({k: v.contiguous() for k, v in build_sccan('tiny').state_dict().items()})
    net = net.double().to('cpu')
    assert net.fast_paths['channels_last']
    assert net.backbone.body.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert net.down_query[0].weight.is_contiguous(memory_format=torch.channels_last)
