"""FewShotSegmenter and predict_sccan.py with a stand-in net whose logits are known.

The stand-in has SCCAN's split API (encode / segment). Its encode() returns the normalised
canvas itself as both feature maps, and segment() marks foreground where the query is bright red
(R > 128) and where the canvas is padding, so any padding that reached the output would show as
foreground.
"""
import os

import cv2
import numpy as np
import pytest
import torch

import predict_sccan
from model import BackboneFeatures
from helpers import assert_one_error, files_below, run_cli, write_palette_png
from util.files.image_io import read_mask
from util.prediction.predictor import FewShotSegmenter, as_rgb, foreground_of
from util.transform import MEAN, STD

VAL = 57


class KnownLogitsNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))    # gives the net a device
        self.encoded = []                                    # batch size of each encode()

    def encode(self, images):
        self.encoded.append(images.shape[0])
        return BackboneFeatures(mid=images, high=images)

    def segment(self, query_feats, support_feats, support_masks, out_size):
        b, k = support_masks.shape[:2]
        assert support_feats.mid.shape[0] == b * k
        assert tuple(query_feats.mid.shape[-2:]) == tuple(out_size) == support_masks.shape[-2:]
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        raw = query_feats.mid * std + mean                   # back to 0..255
        padding = (raw.abs() < 1e-3).all(dim=1)              # the test images have no black
        foreground = padding | (raw[:, 0] > 128)
        fg_logit = torch.where(foreground, 5.0, -5.0)
        return torch.stack([torch.zeros_like(fg_logit), fg_logit], dim=1)    # B×2×S×S


def pattern_image(h, w, block):
    """Dark image (no black pixel), bright red block at rows r0:r1, cols c0:c1 (`block`)."""
    image = np.full((h, w, 3), 60, np.uint8)
    r0, r1, c0, c1 = block
    image[r0:r1, c0:c1, 0] = 220
    truth = np.zeros((h, w), np.uint8)
    truth[r0:r1, c0:c1] = 1
    return image, truth


def support_pair(h=40, w=50):
    image = np.full((h, w, 3), 90, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[5:20, 10:30] = 1
    return image, mask


@pytest.fixture
def seg():
    return FewShotSegmenter(KnownLogitsNet(), val_size=VAL)


# --- geometry -------------------------------------------------------------------------------------
def test_odd_query_gets_a_mask_of_its_size_without_padding(seg):
    image, truth = pattern_image(45, 101, (10, 30, 20, 70))
    mask = seg.segment([support_pair()[0]], [support_pair()[1]], image)
    assert mask.shape == (45, 101) and mask.dtype == np.uint8
    # away from the block's edges (resampling blurs them) the mask is the pattern ...
    far = cv2.dilate(truth, np.ones((7, 7))) == cv2.erode(truth, np.ones((7, 7)))
    np.testing.assert_array_equal(mask[far], truth[far])
    # ... and the last rows/columns, next to the padding, stay background
    assert mask[-6:].sum() == 0 and mask[:, -6:].sum() == 0


def test_whole_canvas_resize_would_leak_padding(seg):
    """The check above has teeth: resizing the whole canvas to the longer side (the benchmark's
    ori_resize) puts padding into the last rows of this query."""
    image, _ = pattern_image(45, 101, (10, 30, 20, 70))
    canvas = seg._canvas(image, np.zeros((45, 101), bool), 'q')[0][None]
    features = BackboneFeatures(mid=canvas, high=canvas)
    logits = seg.net.segment(features, features, torch.ones(1, 1, VAL, VAL), (VAL, VAL))
    whole = torch.nn.functional.interpolate(logits, size=(101, 101), mode='bilinear',
                                            align_corners=True)[0, :, :45, :101]
    assert (whole[1] > whole[0])[-3:].all()


def test_query_of_the_valid_size_comes_back_exactly(seg):
    image, truth = pattern_image(56, 40, (4, 17, 3, 11))     # at 57: 56×40 stays 56×40
    prob = seg.probabilities([support_pair()[0]], [support_pair()[1]], image)
    assert prob.shape == (56, 40) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, np.where(truth == 1, 1 / (1 + np.exp(-5)),
                                              1 / (1 + np.exp(5))), rtol=1e-5)


def test_grayscale_and_rgba_inputs():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(as_rgb(gray, 'x'), np.stack([gray] * 3, axis=2))
    rgba = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(as_rgb(rgba, 'x'), rgba[:, :, :3])


@pytest.mark.parametrize('mask, expected', [
    (np.array([[True, False]]), [[1, 0]]),
    (np.array([[0, 1, 255]], np.uint8), [[0, 1, 0]]),         # dataset label: 255 = ignore
    (np.array([[0, 255, 255]], np.uint8), [[0, 1, 1]]),       # {0,255} mask: 255 = foreground
    (np.array([[0, 127, 128, 254]], np.uint8), [[0, 0, 1, 1]]),   # anti-aliased / JPEG
    (np.array([[0.0, 0.49, 0.5, 1.0]], np.float32), [[0, 0, 1, 1]]),
    (np.array([[0, 1]], np.uint16), [[0, 1]]),
])
def test_mask_rule(mask, expected):
    np.testing.assert_array_equal(foreground_of(mask, 'm'), np.array(expected, bool))


# --- feature reuse and shots ----------------------------------------------------------------------
def test_supports_are_encoded_once_for_many_queries(seg):
    supports = [support_pair(), support_pair(33, 70)]
    queries = [pattern_image(h, w, (0, 9, 0, 9))[0]        # wide, small (upscaled), square
               for h, w in ((45, 101), (30, 20), (64, 64))]
    masks = list(seg.segment_many([s[0] for s in supports], [s[1] for s in supports], queries))
    assert [m.shape for m in masks] == [(45, 101), (30, 20), (64, 64)]
    assert seg.net.encoded == [2, 1, 1, 1]    # both supports in one batch, then one per query


# --- errors (Python API) --------------------------------------------------------------------------
def _mask_with_pixel():
    mask = np.zeros((400, 400), np.uint8)
    mask[1, 1] = 1                            # nearest resize ×57/400 samples rows 0, 7, ...
    return mask


@pytest.mark.parametrize('images, masks, message', [
    ([], [], 'at least one support'),
    ([np.zeros((8, 8, 3), np.uint8)] * 2, [np.ones((8, 8), np.uint8)], '2 support images but 1'),
    ([np.zeros((40, 50, 3), np.uint8)], [np.ones((40, 51), np.uint8)],
     r'support mask 0 is 40×51 \(H×W\) but support image 0 is 40×50'),
    ([np.zeros((8, 8, 3), np.uint8)], [np.zeros((8, 8), np.uint8)], 'no foreground'),
    ([np.zeros((8, 8, 3), np.uint8)], [np.full((8, 8), 3, np.uint8)], r'label == class_id'),
    ([np.zeros((8, 8, 3), np.float32)], [np.ones((8, 8), np.uint8)], 'must be uint8'),
    ([np.zeros((8, 8, 2), np.uint8)], [np.ones((8, 8), np.uint8)], r'expected H×W×3'),
    ([np.zeros((400, 400, 3), np.uint8)], [_mask_with_pixel()], 'vanish when the image is resized'),
    ([np.zeros((200, 7, 3), np.uint8)], [np.ones((200, 7), np.uint8)], r'200×7 image: too thin'),
    ([np.zeros((0, 7, 3), np.uint8)], [np.ones((0, 7), np.uint8)], 'non-empty'),
])
def test_support_errors(seg, images, masks, message):
    with pytest.raises(ValueError, match=message):
        seg.segment(images, masks, np.zeros((9, 9, 3), np.uint8))


def test_bad_val_size():
    with pytest.raises(ValueError, match=r'\(val_size - 1\) % 8 == 0'):
        FewShotSegmenter(KnownLogitsNet(), val_size=64)


# --- command line (stand-in net behind from_checkpoint) ------------------------------------------
@pytest.fixture
def files(tmp_path):
    """Support and query files on disk; returns a dict of paths."""
    paths = {}
    image, mask = support_pair()
    paths['s_img'], paths['s_mask'] = str(tmp_path / 's.jpg'), str(tmp_path / 's.png')
    cv2.imwrite(paths['s_img'], image)
    cv2.imwrite(paths['s_mask'], mask * 255)
    for name, (h, w) in {'q1': (56, 40), 'q2': (45, 101)}.items():
        paths[name] = str(tmp_path / f'{name}.png')
        cv2.imwrite(paths[name], pattern_image(h, w, (4, 17, 3, 11))[0][:, :, ::-1])   # RGB→BGR
    paths['out'] = str(tmp_path / 'out')
    return paths


@pytest.fixture
def stand_in(monkeypatch):
    net = KnownLogitsNet()
    monkeypatch.setattr(FewShotSegmenter, 'from_checkpoint',
                        classmethod(lambda cls, path, **kw: cls(net, val_size=VAL)))
    return net


def test_cli_writes_masks_overlays_and_fractions(files, stand_in, capsys):
    code, out, err = run_cli(predict_sccan.main, [
        '--weight', 'w.pth', '--support', files['s_img'], files['s_mask'],
        '--support', files['s_img'], files['s_mask'],
        '--query', files['q1'], files['q2'], '--out', files['out']], capsys)
    assert code == 0, err
    assert stand_in.encoded == [2, 1, 1]
    mask = cv2.imread(os.path.join(files['out'], 'q1_mask.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, pattern_image(56, 40, (4, 17, 3, 11))[1] * 255)
    assert cv2.imread(os.path.join(files['out'], 'q2_mask.png')).shape[:2] == (45, 101)
    assert f'{files["q1"]}: foreground {13 * 8 / (56 * 40):.1%}' in out      # 13×8 block
    overlay = cv2.imread(os.path.join(files['out'], 'q1_overlay.png'))
    assert overlay.shape == (2 * 48, 40 + 48, 3)          # query + column of 2 thumbnails
    # the block (columns 3..10) outlined: red (230,30,30) on its edge between black, inside as it is
    assert [tuple(overlay[10, c]) for c in (2, 3, 4, 5)] == [(0, 0, 0), (30, 30, 230), (0, 0, 0),
                                                             (60, 60, 220)]


def test_cli_names_outputs_uniquely(files, stand_in, capsys, tmp_path):
    os.makedirs(tmp_path / 'b')
    other = str(tmp_path / 'b' / 'q1.png')
    cv2.imwrite(other, cv2.imread(files['q1']))
    code, _, err = run_cli(predict_sccan.main, [
        '--weight', 'w.pth', '--support', files['s_img'], files['s_mask'],
        '--query', files['q1'], other, '--out', files['out']], capsys)
    assert code == 0, err
    assert sorted(os.listdir(files['out'])) == ['q1_1_mask.png', 'q1_1_overlay.png',
                                                 'q1_mask.png', 'q1_overlay.png']


def test_cli_reads_palette_masks(tmp_path):
    index = np.zeros((5, 7), np.uint8)
    index[1:3, 2:5], index[0, 0], index[4] = 1, 2, 255
    palette = np.zeros((256, 3), np.uint8)
    palette[1], palette[2], palette[255] = (128, 0, 0), (0, 128, 0), (224, 224, 192)
    path = tmp_path / 'p.png'
    write_palette_png(path, index, palette)
    np.testing.assert_array_equal(read_mask(str(path)),
                                  (index != 0) & (index != 255))


def _cli_error_cases(files, tmp_path):
    not_image = tmp_path / 'notes.jpg'
    not_image.write_text('not an image')
    wrong_size = str(tmp_path / 'wrong.png')
    cv2.imwrite(wrong_size, np.full((41, 50), 255, np.uint8))
    empty = str(tmp_path / 'empty.png')
    cv2.imwrite(empty, np.zeros((40, 50), np.uint8))
    s = ['--support', files['s_img']]
    return {
        'missing query': (s + [files['s_mask'], '--query', 'nope.jpg'],
                          'query image not found: nope.jpg'),
        'unreadable image': (['--support', str(not_image), files['s_mask'], '--query', files['q1']],
                             f'{not_image}: cannot be decoded as an image'),
        'missing mask': (s + ['nope.png', '--query', files['q1']], 'mask not found: nope.png'),
        'mask size': (s + [wrong_size, '--query', files['q1']],
                      f'{wrong_size} is 41×50 (H×W) but {files["s_img"]} is 40×50'),
        'empty mask': (s + [empty, '--query', files['q1']], f'{empty} has no foreground'),
        'unreadable mask': (s + [str(not_image), '--query', files['q1']],
                            f'{not_image}: cannot be decoded as a mask image'),
        'folder as query': (s + [files['s_mask'], '--query', files['q1'], str(tmp_path)],
                            f'query image {tmp_path} is a folder, not a file'),
    }


@pytest.mark.parametrize('case', ['missing query', 'unreadable image', 'missing mask',
                                  'mask size', 'empty mask', 'unreadable mask', 'folder as query'])
def test_cli_errors_are_one_line(case, files, stand_in, capsys, tmp_path):
    args, message = _cli_error_cases(files, tmp_path)[case]
    code, out, err = run_cli(predict_sccan.main, ['--weight', 'w.pth', '--out', files['out']] + args,
                             capsys)
    assert code == 2
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err, err
    assert not os.path.exists(files['out'])     # nothing written before the inputs are checked


# --- the user's files ----------------------------------------------------------------------------
def test_an_output_is_never_written_over_an_input(tmp_path, stand_in, capsys):
    """dog.jpg's mask would be dog_mask.png: the support mask given next to it."""
    image, mask = support_pair()
    cv2.imwrite(str(tmp_path / 'dog.jpg'), image)
    cv2.imwrite(str(tmp_path / 'dog_mask.png'), mask * 255)
    before = files_below(tmp_path)
    for extra in ([], ['--overwrite']):
        code, _, err = run_cli(predict_sccan.main, [
            '--weight', 'w.pth', '--support', str(tmp_path / 'dog.jpg'),
            str(tmp_path / 'dog_mask.png'), '--query', str(tmp_path / 'dog.jpg'),
            '--out', str(tmp_path), *extra], capsys)
        assert code == 2 and err == (f'error: output {tmp_path}/dog_mask.png would overwrite the '
                                     f'input {tmp_path}/dog_mask.png; write the outputs '
                                     'elsewhere\n')
        assert files_below(tmp_path) == before


def test_existing_outputs_are_replaced_only_with_overwrite(files, stand_in, capsys):
    argv = ['--weight', 'w.pth', '--support', files['s_img'], files['s_mask'],
            '--query', files['q1'], '--out', files['out']]
    os.makedirs(files['out'])
    earlier = os.path.join(files['out'], 'q1_overlay.png')
    with open(earlier, 'wb') as f:
        f.write(b'an earlier result')
    code, _, err = run_cli(predict_sccan.main, argv, capsys)
    assert code == 2 and err == f'error: {earlier} exists already; pass --overwrite to replace ' \
                                'it, or write elsewhere\n'
    assert os.listdir(files['out']) == ['q1_overlay.png']
    assert run_cli(predict_sccan.main, argv + ['--overwrite'], capsys)[0] == 0
    assert cv2.imread(earlier) is not None


def test_a_failing_query_is_reported_and_the_others_are_segmented(files, stand_in, capsys,
                                                                  tmp_path):
    broken, thin = str(tmp_path / 'broken.jpg'), str(tmp_path / 'thin.png')
    with open(files['q1'], 'rb') as f:
        data = f.read()
    with open(broken, 'wb') as f:
        f.write(data[:len(data) // 2])
    cv2.imwrite(thin, np.full((3, 300, 3), 200, np.uint8))
    code, out, err = run_cli(predict_sccan.main, [
        '--weight', 'w.pth', '--support', files['s_img'], files['s_mask'],
        '--query', broken, files['q1'], thin, files['q2'], '--out', files['out']], capsys)
    assert code == 2
    assert err.splitlines() == [
        f'error: {broken}: truncated or corrupt PNG: its chunks end before the IEND chunk',
        f'error: {thin}: 3×300 image: too thin to keep a pixel of its short side at '
        f'val_size {VAL}']
    assert [line.split(':')[0] for line in out.splitlines()] == [files['q1'], files['q2']]
    assert sorted(os.listdir(files['out'])) == ['q1_mask.png', 'q1_overlay.png', 'q2_mask.png',
                                                'q2_overlay.png']


def test_an_image_and_mask_given_the_other_way_round_give_a_warning(files, stand_in, capsys):
    """Swapped, the mask (black and white) is taken for the image and the photo for the mask:
    a warning, or, where the photo-as-mask fails (here no pixel is >= 128), in its error."""
    doubt = (f"{files['s_mask']} is black and white only, as a mask is: were the image and its mask "
             'given the other way round?')
    code, _, err = run_cli(predict_sccan.main, [
        '--weight', 'w.pth', '--support', files['s_mask'], files['s_img'], '--query', files['q1'],
        '--out', files['out']], capsys)
    assert_one_error(code, err, f"{files['s_img']} has no foreground pixels", f'(and {doubt})')
    bright = files['s_img'][:-4] + '_bright.png'
    cv2.imwrite(bright, 255 - cv2.imread(files['s_img']))         # most of it >= 128 as a mask
    code, _, err = run_cli(predict_sccan.main, [
        '--weight', 'w.pth', '--support', files['s_mask'], bright, '--query', files['q1'],
        '--out', files['out']], capsys)
    assert code == 0 and err.startswith(f'warning: {doubt}'), err


@pytest.mark.parametrize('mask, warning', [
    (np.full((40, 50), 255, np.uint8), '100.0% of it is foreground after thresholding'),
    (np.repeat([0, 3, 15, 200], [500, 500, 500, 500]).reshape(40, 50).astype(np.uint8),
     'looks like a class-id label map (values 3, 15, 200)'),
])
def test_suspicious_support_masks_give_a_warning(tmp_path, files, stand_in, capsys, mask, warning):
    path = str(tmp_path / 'odd_mask.png')
    cv2.imwrite(path, mask)
    code, _, err = run_cli(predict_sccan.main, [
        '--weight', 'w.pth', '--support', files['s_img'], path, '--query', files['q1'],
        '--out', files['out']], capsys)
    assert code == 0 and err.startswith(f'warning: {path}') and warning in err, err
