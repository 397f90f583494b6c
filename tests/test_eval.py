"""The evaluation loop with a stand-in predictor whose logits are known: original-resolution
scoring (ori_resize), ignore handling, per-class bookkeeping."""
import pytest
import torch

from util.evaluate import evaluate, original_targets

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
