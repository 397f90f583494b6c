import pytest

from util.folds import fold_classes


@pytest.mark.parametrize('split', range(4))
def test_pascal_folds(split):
    base, novel = fold_classes('pascal', split)
    assert novel == [5 * split + k for k in range(1, 6)]
    assert base == [c for c in range(1, 21) if c not in novel]


def test_pascal_fold_examples_by_hand():
    assert fold_classes('pascal', 0) == (list(range(6, 21)), [1, 2, 3, 4, 5])
    assert fold_classes('pascal', 3)[1] == [16, 17, 18, 19, 20]


@pytest.mark.parametrize('split', range(4))
def test_coco_interleaved_folds(split):
    base, novel = fold_classes('coco', split, use_split_coco=True)
    assert novel == [split + 1 + 4 * k for k in range(20)]
    assert sorted(base + novel) == list(range(1, 81)) and not set(base) & set(novel)


@pytest.mark.parametrize('split', range(4))
def test_coco_contiguous_folds(split):
    base, novel = fold_classes('coco', split, use_split_coco=False)
    assert novel == list(range(20 * split + 1, 20 * split + 21))
    assert base == [c for c in range(1, 81) if c not in novel]


def test_coco_fold_examples_by_hand():
    assert fold_classes('coco', 1)[1][:3] == [2, 6, 10] and fold_classes('coco', 1)[1][-1] == 78
    assert fold_classes('coco', 3, use_split_coco=False)[1][0] == 61


@pytest.mark.parametrize('data_set, split', [('voc', 0), ('pascal', 4), ('coco', -1),
                                             ('pascal', '0')])
def test_unknown_data_set_or_split(data_set, split):
    with pytest.raises(ValueError, match=repr(data_set) if data_set == 'voc' else 'split'):
        fold_classes(data_set, split)
