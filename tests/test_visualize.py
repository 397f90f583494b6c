"""Pictures that cannot mislead (util/prediction/visualize.py): masks drawn as outlines that no
image colour hides or imitates, an empty prediction labelled, huge overlays scaled down for the
page."""
import numpy as np
import torch

from util.prediction.visualize import (EDGE_COLOUR, PREDICTION_COLOUR, SUPPORT_COLOUR, TRUTH_COLOUR,
                                       episode_panel, fitted, outline, prediction_overlay, to_rgb)
from util.transform import MEAN, STD

RED = (230, 20, 20)          # a synthetic object's saturated red, the prediction's own colour


def red_square(side=60):
    """A red square object on grey, and its mask (1 on the object, 255 on a 1-pixel band)."""
    rgb = np.full((side, side, 3), 128, np.uint8)
    mask = np.zeros((side, side), np.uint8)
    rgb[15:45, 15:45] = RED
    mask[15:45, 15:45] = 1
    return rgb, mask


def test_a_mask_is_its_outline_between_black_edges_and_leaves_the_object_as_it_is():
    rgb, mask = red_square()
    drawn = outline(rgb, mask, PREDICTION_COLOUR)
    np.testing.assert_array_equal(drawn[18:42, 18:42], rgb[18:42, 18:42])   # inside: untouched
    np.testing.assert_array_equal(drawn[:12], rgb[:12])                     # far outside too
    column = [tuple(p) for p in drawn[10:20, 30]]      # across the top edge, at row 15
    assert column[4:7] == [EDGE_COLOUR, PREDICTION_COLOUR, EDGE_COLOUR], column
    mask[5, 5] = 255
    assert (outline(rgb, mask, PREDICTION_COLOUR)[5, 5] == 64).all()          # ignored: darker


def normalised(rgb):
    """H×W×3 uint8 → the normalised 3×H×W tensor the data sets give."""
    return ((torch.from_numpy(rgb).float() - torch.tensor(MEAN)) / torch.tensor(STD)).permute(2, 0, 1)


def test_an_empty_prediction_is_labelled_not_drawn_like_the_image():
    """The red object with no prediction: the prediction tile says 'nothing found'; with a
    prediction, its outline, and the ground truth and support in their own colours."""
    rgb, mask = red_square()
    query, labels = normalised(rgb), torch.from_numpy(mask).long()
    empty = episode_panel(query, labels, torch.zeros_like(labels), query[None], labels[None])
    found = episode_panel(query, labels, labels, query[None], labels[None])
    tile = lambda panel, k: panel[:, k * 64:k * 64 + 60]  # noqa: E731  (60-pixel tiles, 4 apart)
    assert (tile(empty, 0)[15, 30] == SUPPORT_COLOUR).all() and (tile(empty, 1)[15, 30] == TRUTH_COLOUR).all()
    plain = tile(empty, 2)
    assert (plain[:3, :40] == EDGE_COLOUR).all()                      # the label's black band
    assert (plain[3:10, 2:40] > 100).any()                            # light letters in it
    np.testing.assert_array_equal(plain[15:], to_rgb(query)[15:])     # nothing else drawn
    assert (tile(found, 2)[15, 30] == PREDICTION_COLOUR).all() and (tile(found, 2)[:3, :40] != 0).all()


def test_the_query_overlay_outlines_both_and_labels_an_empty_one():
    rgb, mask = red_square(96)
    overlay = prediction_overlay(rgb, mask, [rgb], [mask])
    assert overlay.shape == (96, 96 + 48, 3)                 # a column of 48-pixel thumbnails
    colours = lambda part, colour: (part == colour).all(2).sum()  # noqa: E731
    assert colours(overlay[:, :96], PREDICTION_COLOUR) > 100 and colours(overlay[:, :96], SUPPORT_COLOUR) == 0
    assert colours(overlay[:, 96:], SUPPORT_COLOUR) > 50 and colours(overlay[:, 96:], PREDICTION_COLOUR) == 0
    empty = prediction_overlay(rgb, np.zeros_like(mask), [rgb], [mask])
    assert (empty[:3, :40] == EDGE_COLOUR).all() and colours(empty, PREDICTION_COLOUR) == 0


def test_a_huge_picture_is_fitted_a_small_one_kept():
    huge = np.zeros((3000, 6000, 3), np.uint8)
    assert fitted(huge, 1280).shape == (640, 1280, 3)
    small = np.zeros((100, 50, 3), np.uint8)
    assert fitted(small, 1280) is small
