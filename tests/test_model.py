"""Structure, behaviour on hand-built tensors, and input errors of the SCCAN model."""
import pytest
import torch

from model import MODEL_VARIANTS, SCCAN, CheckpointError, build_sccan, load_backbone_weights, load_weights
from model.loss import weighted_dice_loss
from model import prior as prior_module
from model.prior import PriorMask
from util.config import default_config
from util.episodes import TRAINING_INPUTS
from util.optim import apply_schedule, build_optimizers, forward_backward, optimizer_step
from util.precision import Precision
from model.scca import PatchAlignment, SCCABlock, gather_patches, merge_patches, split_patches

from tools.dev.random_episodes import random_episode as episode

def spec_state_dict_keys(layers=50, depth=8):
    """The authors' parameter names (their model/SCCAN.py and swin_sccan.py), written out from
    their rules (not from our model)."""
    keys = set()
    bn = ('weight', 'bias', 'running_mean', 'running_var')
    for i in (1, 2, 3):
        keys.add(f'backbone.body.conv{i}.weight')
        keys.update(f'backbone.body.bn{i}.{b}' for b in bn)
    blocks = {14: (1, 1, 1, 1), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[layers]
    for stage, n in enumerate(blocks, start=1):
        for j in range(n):
            prefix = f'backbone.body.layer{stage}.{j}'
            for i in (1, 2, 3):
                keys.add(f'{prefix}.conv{i}.weight')
                keys.update(f'{prefix}.bn{i}.{b}' for b in bn)
            if j == 0:
                keys.add(f'{prefix}.downsample.0.weight')
                keys.update(f'{prefix}.downsample.1.{b}' for b in bn)
    keys.update({'down_query.0.weight', 'down_supp.0.weight', 'init_merge_query.0.weight',
                 'init_merge_supp.0.weight', 'transformer.norm0.weight', 'transformer.norm0.bias',
                 'res1_meta.0.weight', 'res2_meta.0.weight', 'res2_meta.2.weight',
                 'cls_meta.0.weight', 'cls_meta.3.weight', 'cls_meta.3.bias'})
    for n in range(depth):
        prefix = f'transformer.layers.0.blocks.{n}'
        for leaf in ('norm1', 'norm2', 'attn_q.q', 'attn_q.kv', 'attn_q.proj', 'attn_s.q', 'attn_s.kv',
                     'attn_s.proj', 'mlp_q.fc1', 'mlp_q.fc2', 'mlp_s.fc1', 'mlp_s.fc2'):
            keys.update({f'{prefix}.{leaf}.weight', f'{prefix}.{leaf}.bias'})
    for i in range(5):
        keys.update({f'ASPP_meta.layer6_{i}.0.weight', f'ASPP_meta.layer6_{i}.0.bias'})
    return keys


@pytest.fixture(scope='module')
def net50():
    return SCCAN(layers=50)


@pytest.fixture(scope='module')
def tiny():
    return build_sccan('tiny').eval()


def test_state_dict_keys_are_the_authors(net50):
    assert set(net50.state_dict()) == spec_state_dict_keys(50)


def test_resnet101_keys():
    assert set(SCCAN(layers=101).state_dict()) == spec_state_dict_keys(101)


def test_tiny_keys_follow_the_authors_naming():
    assert set(build_sccan('tiny').state_dict()) == spec_state_dict_keys(14, MODEL_VARIANTS['tiny']['depth'])


def test_parameter_counts(net50):
    assert sum(p.numel() for p in net50.parameters()) == 34_951_618
    assert sum(p.numel() for p in net50.parameters() if p.requires_grad) == 11_373_314
    sgd_groups, adamw = net50.parameter_groups()
    sgd = [p for group in sgd_groups for p in group]
    assert sum(p.numel() for p in sgd) + sum(p.numel() for p in adamw) == 11_373_314
    assert all(p.requires_grad for p in sgd + adamw)


def test_sgd_groups_are_the_authors_modules_in_their_order(net50):
    """OneModel.get_optim of the authors: eight SGD groups, one per module, in this order (the
    lr schedule's index_split counts them)."""
    sgd_groups, _ = net50.parameter_groups()
    names = {id(p): name.split('.')[0] for name, p in net50.named_parameters()}
    assert [{names[id(p)] for p in group} for group in sgd_groups] == [
        {'down_query'}, {'down_supp'}, {'init_merge_query'}, {'init_merge_supp'}, {'ASPP_meta'},
        {'res1_meta'}, {'res2_meta'}, {'cls_meta'}]


def test_index_split_keeps_the_first_groups_at_base_lr(net50):
    cfg = default_config().replace(index_split=2)
    sgd, adamw = build_optimizers(net50, cfg)
    lr = apply_schedule(sgd, cfg, 1, 10, 5)
    assert [g['lr'] for g in sgd.param_groups] == [lr] * 3 + [10 * lr] * 5
    assert [g['lr'] for g in adamw.param_groups] == [cfg.transformer_lr]


def test_output_stride_8_and_feature_widths(net50, tiny):
    """layer2 ‖ layer3 and layer4 are 24 and 32 times the base width wide (64 in the paper)."""
    features = net50.encode(torch.randn(1, 3, 57, 57))
    assert features.mid.shape == (1, 1536, 8, 8) and features.high.shape == (1, 2048, 8, 8)
    assert not features.high.requires_grad
    width = MODEL_VARIANTS['tiny']['backbone_width']
    features = tiny.encode(torch.randn(1, 3, 473, 473))
    assert features.mid.shape == (1, 24 * width, 60, 60) and features.high.shape == (1, 32 * width, 60, 60)


def test_unknown_layers_rejected():
    with pytest.raises(ValueError, match=r'layers must be one of \[14, 50, 101\], got 34'):
        SCCAN(layers=34)


def test_gradients_reach_every_trainable_parameter_and_no_backbone():
    torch.manual_seed(0)
    net = build_sccan('tiny').train()
    pred, loss = net(*episode())
    assert pred.shape == (2, 65, 65) and pred.dtype == torch.long
    loss.backward()
    # The last block's support branch feeds nothing (as in the reference): no gradient there.
    unused = ('transformer.layers.0.blocks.1.attn_s.', 'transformer.layers.0.blocks.1.mlp_s.')
    for name, p in net.named_parameters():
        if name.startswith(unused):
            assert p.grad is None, name
        elif name.startswith('backbone.'):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_backbone_stays_fixed_through_a_training_step():
    """A training step changes the head, never the backbone, whose BN normalises with its stored
    statistics in train mode as in eval mode (a BatchNorm in train mode would normalise with the
    batch's and update its running ones)."""
    torch.manual_seed(0)
    net = build_sccan('tiny')
    g = torch.Generator().manual_seed(1)        # BN statistics unlike any batch's
    net.backbone.load_state_dict({k: torch.rand(v.shape, generator=g) + 0.5
                                  for k, v in net.backbone.state_dict().items() if v.dim() == 1},
                                 strict=False)
    inputs = episode()
    with torch.no_grad():
        eval_features = net.eval().encode(inputs[0])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = default_config()
    precision = Precision('cpu')
    scaler = precision.grad_scaler()
    forward_backward(net.train(), dict(zip(TRAINING_INPUTS, inputs)), precision, scaler, torch.device('cpu'))
    optimizer_step(scaler, build_optimizers(net, cfg))
    changed = {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}
    assert 'down_query.0.weight' in changed and not any(k.startswith('backbone.') for k in changed)
    train_features = net.encode(inputs[0])
    assert (torch.equal(train_features.mid, eval_features.mid)
            and torch.equal(train_features.high, eval_features.high))


def test_k_shot_output_invariant_to_shot_order():
    torch.manual_seed(0)
    net = build_sccan('tiny').eval().double()
    query, support, masks, _ = episode(b=1, k=3)
    query, support = query.double(), support.double()
    order = [2, 0, 1]
    with torch.no_grad():
        a = net(query, support, masks)
        b = net(query, support[:, order], masks[:, order])
    assert (a - b).abs().max() < 1e-10


def test_prior_mask_stays_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    query, support = torch.rand(1, 64, 8, 8, generator=g), torch.rand(1, 2, 64, 16, 16, generator=g)
    masks = (torch.rand(1, 2, 256, generator=g) > 0.7).float()
    expected = PriorMask()(query, support, masks, (16, 16))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        prior = PriorMask()(query.bfloat16(), support.bfloat16(), masks.bfloat16(), (16, 16))
    assert prior.dtype == torch.float32
    # what remains is the bf16 rounding of the inputs, not of the normalised sums
    assert (prior - expected).abs().max() < 0.01          # 0.25 with the prior in bf16


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_prior_mask_in_blocks_of_query_pixels_equals_one_product_to_rounding(monkeypatch, dtype):
    # 2 episodes, 2 shots, 9×9 = 81 query pixels, 100 support pixels (200 entries per query row
    # of the batch): 20 entries give blocks of 1 row (the floor), 1000 of 5 rows (the last one
    # of 1), 1e6 one block of all 81.
    g = torch.Generator().manual_seed(1)
    query = torch.rand(2, 32, 9, 9, generator=g, dtype=dtype)
    support = torch.rand(2, 2, 32, 10, 10, generator=g, dtype=dtype)
    masks = (torch.rand(2, 2, 100, generator=g) > 0.6).to(dtype)
    priors = []
    for entries in (20, 1000, 10 ** 6):
        monkeypatch.setattr(prior_module, 'CPU_BLOCK_ENTRIES', entries)
        priors.append(PriorMask()(query, support, masks, (10, 10)))
    # the same arithmetic per query pixel; only the matmul kernel's summation order may change
    # with the block's shape (one row is a matrix-vector product)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert (priors[0] - priors[2]).abs().max() < tolerance and (priors[1] - priors[2]).abs().max() < tolerance
    assert priors[2].shape == (2, 1, 10, 10) and 0 <= priors[2].min() and priors[2].max() <= 1


def test_patch_alignment_picks_most_similar_foreground_patch():
    # 2×2 patches of size 2 on a 4×4 grid, 2 channels.
    window = 2
    query = torch.zeros(1, 2, 4, 4)
    query[0, 0] = 1.0                       # every query patch points along channel 0
    support = torch.zeros(1, 2, 4, 4)
    support[0, :, :2, :2] = torch.tensor([1.0, 0.0]).view(2, 1, 1)   # patch 0: same direction, no fg
    support[0, :, :2, 2:] = torch.tensor([0.0, 1.0]).view(2, 1, 1)   # patch 1: orthogonal, fg
    support[0, :, 2:, :2] = torch.tensor([1.0, 1.0]).view(2, 1, 1)   # patch 2: 45°, fg
    support[0, :, 2:, 2:] = torch.tensor([-1.0, 0.0]).view(2, 1, 1)  # patch 3: opposite, fg
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, 2:] = 1
    mask[0, 0, 2:, :2] = 1
    mask[0, 0, 3, 3] = 1
    index = PatchAlignment(window)(query, support, mask)
    # Patch 0 is the most similar but has no foreground; patch 2 is the best foreground patch.
    assert index.tolist() == [[2, 2, 2, 2]]


def test_patch_alignment_without_foreground_falls_back_to_first_patch():
    index = PatchAlignment(2)(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
    assert index.tolist() == [[0, 0, 0, 0]]


def test_gather_patches_takes_whole_patches():
    x = torch.arange(2 * 4 * 4 * 3, dtype=torch.float).view(2, 4, 4, 3)
    patches = split_patches(x, 2)                      # 2×4×4×3
    assert torch.equal(merge_patches(patches, 2, 4, 4), x)
    index = torch.tensor([[3, 3, 0, 1], [2, 2, 2, 2]])
    gathered = gather_patches(patches, index)
    assert torch.equal(gathered[0, 0], patches[0, 3]) and torch.equal(gathered[1, 3], patches[1, 2])


def test_split_patches_row_major():
    x = torch.arange(16, dtype=torch.float).view(1, 4, 4, 1)
    patches = split_patches(x, 2)
    assert patches[0, 1, :, 0].tolist() == [2, 3, 6, 7]


@pytest.mark.parametrize('shifted', [False, True])
def test_blocks_keep_the_grid(shifted):
    block = SCCABlock(dim=8, num_heads=2, window=4, mlp_ratio=1.0, shifted=shifted)
    q, s = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    mask = (torch.rand(2, 8, 8, 1) > 0.5).float()
    aligned = []
    block.align.register_forward_hook(lambda module, inputs, index: aligned.append(index))
    out_q, out_s = block(q, s, mask)
    assert out_q.shape == q.shape and out_s.shape == s.shape
    # 8×8 grid: 4 patches unshifted, 9 when padded by half a window on each side.
    assert [index.shape for index in aligned] == [(2, 9 if shifted else 4)]


def test_shifted_block_crops_back_exactly():
    # With zero attention and MLP output the block is the identity: the crop restores the grid.
    block = SCCABlock(dim=8, num_heads=2, window=4, mlp_ratio=1.0, shifted=True)
    for module in (block.attn_q.proj, block.attn_s.proj, block.mlp_q.fc2, block.mlp_s.fc2):
        torch.nn.init.zeros_(module.weight)
        torch.nn.init.zeros_(module.bias)
    q, s = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)
    out_q, out_s = block(q, s, torch.ones(1, 8, 8, 1))
    assert torch.equal(out_q, q) and torch.equal(out_s, s)


def test_last_block_support_branch_skipped_changes_nothing():
    torch.manual_seed(0)
    block = SCCABlock(dim=8, num_heads=2, window=4, mlp_ratio=1.0, shifted=False)
    q, s, mask = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8), torch.ones(1, 8, 8, 1)
    full_q, _ = block(q, s, mask)
    skipped_q, same_s = block(q, s, mask, update_support=False)
    assert torch.equal(full_q, skipped_q) and same_s is s


def test_dice_loss_hand_computed():
    # One image, 1×2 pixels: label [1, 255]; logits 0 everywhere → sigmoid 0.5.
    logits = torch.zeros(1, 2, 1, 2)
    label = torch.tensor([[[1, 255]]])
    # background target [0, 0]: 1 − 0 / (0.25+0.25) = 1
    # foreground target [1, 0]: 1 − 2·0.5 / (0.5 + 1) = 1 − 2/3
    expected = 1 + (1 - 2 / 3)
    assert weighted_dice_loss(logits, label).item() == pytest.approx(expected, abs=1e-7)


def test_dice_loss_ignore_pixels_only_add_to_prediction_energy():
    logits = torch.tensor([[[[4.0, -3.0]], [[-2.0, 5.0]]]])
    label = torch.tensor([[[0, 255]]])
    p = torch.sigmoid(logits)[0, :, 0]
    bg = 1 - 2 * p[0, 0] / (p[0] ** 2).sum().add(1)
    fg = 1 - 0 / ((p[1] ** 2).sum())
    assert weighted_dice_loss(logits, label).item() == pytest.approx((bg + fg).item(), abs=1e-6)
    # Averaged over the batch: two copies give the same value.
    assert weighted_dice_loss(logits.repeat(2, 1, 1, 1), label.repeat(2, 1, 1)).item() == \
        pytest.approx((bg + fg).item(), abs=1e-6)


def test_any_number_of_shots_runs(tiny):
    """The weights do not depend on K: one net runs 1-, 2- and 5-shot episodes, and K copies of
    one support give the 1-shot logits (the K-shot fusion averages)."""
    query, support, masks, _ = episode(b=1, k=1)
    with torch.no_grad():
        one = tiny(query, support, masks)
        for k in (2, 5):
            many = tiny(query, support.expand(-1, k, -1, -1, -1), masks.expand(-1, k, -1, -1))
            assert torch.allclose(one, many, atol=1e-5), k


def test_no_support_is_refused(tiny):
    query, support, masks, _ = episode(b=1)
    with pytest.raises(ValueError, match='at least one image'):
        tiny(query, support[:, :0], masks[:, :0])


def test_mask_image_size_mismatch(tiny):
    query, support, masks, _ = episode(b=1)
    with pytest.raises(ValueError, match='support_masks must be'):
        tiny(query, support, masks[..., :-8])


def test_input_size_rule(tiny):
    with pytest.raises(ValueError, match=r'input size 64×64: both sides must satisfy \(side - 1\) % 8 == 0'):
        tiny(torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 3, 64, 64), torch.zeros(1, 1, 64, 64))


def test_training_needs_query_mask():
    net = build_sccan('tiny').train()
    query, support, masks, _ = episode(b=1)
    with pytest.raises(ValueError, match='query_mask'):
        net(query, support, masks)


def test_load_weights_round_trip_and_formats(tiny, tmp_path):
    state = tiny.state_dict()
    plain = tmp_path / 'plain.pth'
    torch.save(state, plain)
    wrapped = tmp_path / 'authors.pth'
    torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in state.items()},
                'optimizer': {}, 'optimizer_swin': {}}, wrapped)
    for path in (plain, wrapped):
        other = build_sccan('tiny')
        load_weights(other, path)
        assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())


def test_load_weights_lists_missing_and_unexpected_keys(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state.pop('cls_meta.3.bias')
    state['extra.weight'] = torch.zeros(1)
    path = tmp_path / 'bad.pth'
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_weights(build_sccan('tiny'), path)
    message = str(err.value)
    assert str(path) in message and 'cls_meta.3.bias' in message and 'extra.weight' in message


def test_load_weights_other_backbone(tiny, tmp_path):
    path = tmp_path / 'r14.pth'
    torch.save(tiny.state_dict(), path)
    with pytest.raises(CheckpointError, match='missing keys'):
        load_weights(build_sccan('tiny', layers=50), path)


def test_truncated_and_foreign_files(tiny, tmp_path):
    path = tmp_path / 'cut.pth'
    torch.save(tiny.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='truncated or corrupted'):
        load_weights(tiny, path)
    foreign = tmp_path / 'list.pth'
    torch.save([1, 2, 3], foreign)
    with pytest.raises(CheckpointError, match='expected a state dict'):
        load_weights(tiny, foreign)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_weights(tiny, tmp_path / 'nope.pth')


def test_pspnet_backbone_weights_load_and_fc_ignored(tmp_path):
    net = build_sccan('tiny')
    state = {k: torch.randn_like(v) for k, v in net.backbone.body.state_dict().items()}
    state['bn1.num_batches_tracked'] = torch.tensor(7)
    state['fc.weight'], state['fc.bias'] = torch.zeros(1000, 256), torch.zeros(1000)
    path = tmp_path / 'resnet14_v2.pth'
    torch.save(state, path)
    head = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith('backbone.')}
    assert load_backbone_weights(net, str(path)) is net
    assert torch.equal(net.backbone.body.layer4[0].conv3.weight, state['layer4.0.conv3.weight'])
    assert all(torch.equal(net.state_dict()[k], v) for k, v in head.items())
    del state['layer1.0.conv1.weight']
    torch.save(state, path)
    with pytest.raises(CheckpointError,
                       match=r'resnet14_v2.pth \(the backbone of ResNet-14, width 8\) does not fit '
                             r'DeepStemResNet:\n  missing keys \(1\): layer1.0.conv1.weight'):
        load_backbone_weights(build_sccan('tiny'), str(path))


def test_encode_segment_equals_forward(tiny):
    query, support, masks, _ = episode(b=2, k=1)
    with torch.no_grad():
        direct = tiny(query, support, masks)
        q = tiny.encode(query)
        s = tiny.encode(support.flatten(0, 1))
        split = tiny.segment(q, s, masks, (65, 65))
    assert torch.allclose(direct, split, atol=1e-5)
