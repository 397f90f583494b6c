"""Metrics on hand-computed episodes (definitions of the authors' test_sccan.py, validate)."""
import pytest
import torch

from util.evaluation.metrics import IoUMeter, intersection_union

# Three 2×3 episodes; 255 = ignore. Counts worked out by hand in the comments.
TARGETS = torch.tensor([
    [[1, 1, 0], [0, 255, 0]],       # FG: inter 1 union 3   BG: inter 2 union 4
    [[1, 1, 1], [1, 0, 0]],         # FG: inter 2 union 4   BG: inter 2 union 4
    [[0, 0, 255], [255, 0, 0]],     # FG: inter 0 union 1   BG: inter 3 union 4
])
PREDS = torch.tensor([
    [[1, 0, 0], [1, 1, 0]],
    [[1, 1, 0], [0, 0, 0]],
    [[1, 0, 1], [1, 0, 0]],
])
CLASSES = torch.tensor([0, 1, 0])


def test_intersection_union_per_episode():
    inter, union = intersection_union(PREDS, TARGETS)
    assert inter.tolist() == [[2, 1], [2, 2], [3, 0]]
    assert union.tolist() == [[4, 3], [4, 4], [4, 1]]


def test_summary_matches_hand_computed_values():
    meter = IoUMeter(num_classes=2)
    meter.update(PREDS, TARGETS, CLASSES)
    s = meter.summary()
    # class 0: FG (1 + 0) / (3 + 1); class 1: 2 / 4
    assert s['class_IoU'] == pytest.approx([0.25, 0.5])
    assert s['mIoU'] == pytest.approx(0.375)
    # BG 7/12, FG 3/8 pooled over all episodes
    assert s['FB-IoU'] == pytest.approx((7 / 12 + 3 / 8) / 2)
    assert s['pIoU'] == pytest.approx(3 / 8)
    assert s['class_episodes'] == [2, 1] and s['episodes'] == 3


def test_class_without_episodes_counts_zero_as_the_authors():
    meter = IoUMeter(num_classes=3)
    meter.update(PREDS, TARGETS, CLASSES)
    assert meter.summary()['mIoU'] == pytest.approx((0.25 + 0.5 + 0.0) / 3)


def test_predictions_on_ignore_pixels_do_not_count():
    flipped = PREDS.clone()
    flipped[TARGETS == 255] = 1 - flipped[TARGETS == 255]
    a, b = IoUMeter(2), IoUMeter(2)
    a.update(PREDS, TARGETS, CLASSES)
    b.update(flipped, TARGETS, CLASSES)
    assert a.summary() == b.summary()


def test_episode_by_episode_equals_one_batch():
    batched, single = IoUMeter(2), IoUMeter(2)
    batched.update(PREDS, TARGETS, CLASSES)
    for p, t, c in zip(PREDS, TARGETS, CLASSES):
        single.update(p[None], t[None], c[None])
    assert batched.summary() == single.summary()


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match='differ'):
        intersection_union(PREDS[:, :1], TARGETS)
