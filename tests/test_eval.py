"""The evaluation loop with a stand-in predictor whose logits are known: original-resolution
scoring (ori_resize), ignore handling, per-class bookkeeping; episodes in batches against one by
one; the contract that a predictor returns its logits on the evaluation's device."""
import pytest
import torch

from helpers import evaluations_in_batches, make_pascal_config
from model import build_sccan
from util.config import default_config
from tools.dev.random_episodes import random_episode
from util.evaluation.evaluate import (cached_predictor, check_logits, evaluate, forward_predictor,
                                      make_predictor, original_targets)
from util.evaluation.feature_cache import FeatureCache
from util.evaluation.replay import call_on_buffers
from util.precision import Precision

S = 9   # network input size; logits say foreground on columns 0..4, background on 5..8


def column_logits(batch):
    b = batch['query'].shape[0]
    fg = torch.where(torch.arange(S) < 5, 1.0, -1.0).expand(b, S, S)
    return torch.stack([-fg, fg], 1)                                  # B×2×S×S


def one_episode(label, class_index=0, canvas=(8, 8), number=0):
    """A batch of one episode (episode `number` of a plan) whose original label is `label`
    (h×w), padded to `canvas`."""
    h, w = label.shape
    padded = torch.full(canvas, 255, dtype=torch.long)
    padded[:h, :w] = label
    return {'query': torch.zeros(1, 3, S, S), 'class_index': torch.tensor([class_index]),
            'episode_number': torch.tensor([number]),
            'query_mask': torch.zeros(1, S, S, dtype=torch.long),
            'query_mask_original': padded[None], 'original_size': torch.tensor([[h, w]])}


def test_original_target_is_the_label_top_left_in_a_square_of_ignore():
    label = torch.tensor([[1, 0, 0, 1]] * 6)
    (target,) = original_targets(one_episode(label), 'cpu')
    assert target.shape == (6, 6)
    assert torch.equal(target[:, :4], label) and (target[:, 4:] == 255).all()


def test_logits_are_scored_at_the_original_resolution():
    # 6×4 label, foreground in columns 0-1. Logits 9×9 → 6×6 (align_corners): source columns
    # 0, 1.6, 3.2, 4.8, 6.4, 8 → foreground predicted in columns 0-2 only; columns 4-5 ignored.
    label = torch.tensor([[1, 1, 0, 0]] * 6)
    result = evaluate(column_logits, [one_episode(label)], num_classes=1, device='cpu',
                      show_progress=False)
    assert result['class_IoU'] == pytest.approx([12 / 18])           # FG: 12 ∩, 18 ∪
    assert result['FB-IoU'] == pytest.approx((6 / 12 + 12 / 18) / 2)  # BG: 6 ∩, 12 ∪
    assert result['episodes'] == 1


def test_without_ori_resize_the_network_size_label_is_used():
    batch = one_episode(torch.ones(6, 4, dtype=torch.long))
    batch['query_mask'][:, :, :5] = 1                                 # matches the logits
    result = evaluate(column_logits, [batch], num_classes=1, device='cpu', ori_resize=False,
                      show_progress=False)
    assert result['mIoU'] == pytest.approx(1.0) and result['FB-IoU'] == pytest.approx(1.0)


def test_classes_are_kept_apart_and_episodes_seen_by_the_callback():
    good = one_episode(torch.tensor([[1, 1, 1, 0, 0, 0]] * 6), class_index=1, number=5)
    empty = one_episode(torch.zeros(6, 6, dtype=torch.long), class_index=0, number=2)
    seen = []
    result = evaluate(column_logits, [good, empty], num_classes=2, device='cpu',
                      show_progress=False, on_episode=lambda e, batch, b, pred: seen.append(
                          (e, int(batch['class_index'][b]), tuple(pred.shape))))
    assert seen == [(5, 1, (6, 6)), (2, 0, (6, 6))]
    # class 0 has no foreground, but 3 of 6 columns predicted foreground: IoU 0
    assert result['class_IoU'][0] == 0.0
    assert result['class_IoU'][1] == pytest.approx(1.0)
    assert result['class_episodes'] == [1, 1]
    # per episode, in episode order: (BG, FG) counts of the 6×6 labels, FG predicted in
    # columns 0-2 (see above)
    counts = result['per_episode']
    assert counts.episode.tolist() == [2, 5] and counts.class_index.tolist() == [0, 1]
    assert counts.intersection.tolist() == [[18, 0], [18, 18]]
    assert counts.union.tolist() == [[36, 18], [18, 18]]
    assert counts.intersection.dtype == counts.union.dtype == torch.int64


def test_an_episode_whose_target_is_all_ignore_counts_as_an_episode_and_scores_nothing():
    good = one_episode(torch.tensor([[1, 1, 1, 0, 0, 0]] * 6), class_index=1, number=0)
    ignored = one_episode(torch.full((6, 6), 255, dtype=torch.long), class_index=1, number=1)
    alone = evaluate(column_logits, [good], num_classes=2, device='cpu', show_progress=False)
    both = evaluate(column_logits, [good, ignored], num_classes=2, device='cpu',
                    show_progress=False)
    for metric in ('mIoU', 'FB-IoU', 'pIoU', 'class_IoU'):
        assert both[metric] == alone[metric], metric
    assert both['class_episodes'] == [0, 2] and both['episodes'] == 2
    counts = both['per_episode']
    assert counts.intersection[1].tolist() == [0, 0] and counts.union[1].tolist() == [0, 0]
    # its cross-entropy has no pixel to average: it adds nothing, and the mean is per episode
    assert both['loss'] == pytest.approx(alone['loss'] / 2) and alone['loss'] > 0


# ---- episodes in batches, the replayed forward, the device contract ----
@pytest.fixture(scope='module')
def config(tmp_path_factory):
    return make_pascal_config(str(tmp_path_factory.mktemp('batches')), n_train=0, n_val=60)


def test_episodes_in_batches_score_as_one_by_one(config):
    """Three episodes per forward (the last batch of one), plain or through the replay's
    buffers (its last batch padded into the recording of three), give every episode the counts
    it gets alone: the logits differ by rounding only (about 1e-6 here)."""
    (single, _), (batched, _), (replayed, predict) = evaluations_in_batches(
        config, torch.device('cpu'), [(1, None), (3, None), (3, call_on_buffers)])
    for result in (batched, replayed):
        assert result['per_episode'] == single['per_episode']
        for metric in ('mIoU', 'FB-IoU', 'pIoU', 'class_IoU'):
            assert result[metric] == single[metric]
        assert result['loss'] == pytest.approx(single['loss'], rel=1e-6)
    assert predict.replay.recorded == 1


@pytest.fixture(scope='module')
def meta_net():
    """A tiny SCCAN on the 'meta' device: shapes and devices without data, at no cost."""
    return build_sccan('tiny').to('meta').eval()


META = torch.device('meta')
PREDICTORS = {     # every predictor of util.evaluation.evaluate, for an evaluation on META
    'forward': lambda net: forward_predictor(net, Precision('meta'), META),
    'forward, replayed': lambda net: forward_predictor(net, Precision('meta'), META, call_on_buffers),
    'cached': lambda net: cached_predictor(net, FeatureCache(1), Precision('meta'), META, ('val', S)),
    'cached, replayed': lambda net: cached_predictor(net, FeatureCache(1), Precision('meta'), META,
                                                     ('val', S), call_on_buffers),
    'make_predictor': lambda net: make_predictor(net, default_config(), Precision('meta'), META),
}


@pytest.mark.parametrize('name', PREDICTORS)
def test_every_predictor_returns_its_logits_on_the_evaluation_device(meta_net, name):
    """Batches come from the loader on the CPU; an evaluation on another device (here 'meta')
    gets its logits there from every predictor of util.evaluation.evaluate."""
    query, support, masks, _ = random_episode(b=2, k=2, size=S)
    batch = {'query': query, 'support': support, 'support_masks': masks,
             'query_path': ['q0', 'q1'], 'support_paths': [['s0', 's1'], ['s2', 's3']],
             'episode_number': torch.tensor([0, 1])}
    logits = PREDICTORS[name](meta_net)(batch)
    assert check_logits(logits, batch, META) is logits and logits.device == META


def test_the_evaluation_refuses_logits_on_another_device():
    """A predictor that builds its logits on the CPU while the evaluation runs elsewhere (as
    tools/demo.py's support-blind baseline did on a GPU) is stopped with what differs."""
    with pytest.raises(ValueError) as error:
        evaluate(column_logits, [one_episode(torch.ones(6, 4, dtype=torch.long))], 1, 'meta',
                 show_progress=False)
    assert str(error.value) == ('the predictor returned its logits on cpu, but the evaluation runs '
                                'on meta: a predictor must return them on the evaluation device')


def test_the_evaluation_refuses_logits_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r'^the predictor returned logits of shape \(1, 2, 9\) '
                                         r'for a batch of 1 episodes; expected 1×2×H×W$'):
        evaluate(lambda batch: column_logits(batch)[:, :, 0], [one_episode(torch.ones(6, 4))],
                 1, 'cpu', show_progress=False)
