"""util/files/image_io.py and util/files/inputs.py: truncated images are bad files, writes fail
loudly, text files by name."""
import os
import pickle
import struct

import cv2
import numpy as np
import pytest

from util.files.image_io import BadFileError, read_image, read_label, truncation, write_image
from util.files.inputs import read_text, require_file
from util.lists import read_list


def jpeg_bytes(h=60, w=80):
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode('.jpg', image)[1].tobytes()


def png_bytes(h=60, w=80):
    return cv2.imencode('.png', np.arange(h * w, dtype=np.uint8).reshape(h, w) % 21)[1].tobytes()


def with_exif_thumbnail(jpeg):
    """`jpeg` with a complete small JPEG (FFD8 ... FFD9) in an APP1 segment before its scans,
    as cameras store thumbnails."""
    thumbnail = jpeg_bytes(8, 8)
    segment = b'\xff\xe1' + struct.pack('>H', len(thumbnail) + 8) + b'Exif\0\0' + thumbnail
    return jpeg[:2] + segment + jpeg[2:]


@pytest.mark.parametrize('data, complete', [
    (jpeg_bytes(), True),
    (jpeg_bytes() + b'\0\0 trailing bytes after the end marker', True),
    (jpeg_bytes()[:len(jpeg_bytes()) // 3], False),
    (jpeg_bytes()[:-2], False),
    (with_exif_thumbnail(jpeg_bytes()), True),
    (with_exif_thumbnail(jpeg_bytes())[:-100], False),    # the thumbnail's end marker is no end
    (png_bytes(), True),
    (png_bytes()[:len(png_bytes()) // 2], False),
    (png_bytes()[:-12], False),                            # the IEND chunk cut off
    (b'BM other formats are not judged', True),
])
def test_truncation_from_the_bytes(data, complete):
    assert (truncation(data) is None) == complete


@pytest.mark.parametrize('reader, data, name', [(read_image, jpeg_bytes(), 'x.jpg'),
                                                (read_label, png_bytes(), 'x.png')])
def test_a_truncated_file_is_a_bad_file_naming_it(tmp_path, reader, data, name):
    path = tmp_path / name
    path.write_bytes(data)
    assert reader(str(path)).shape[:2] == (60, 80)
    path.write_bytes(data[:len(data) // 3])
    with pytest.raises(BadFileError, match=f'{path}: truncated or corrupt'):
        reader(str(path))
    path.write_bytes(b'')
    with pytest.raises(BadFileError, match=f'{path}: .* file is empty'):
        reader(str(path))


def test_bad_file_errors_cross_processes_with_their_path():
    error = pickle.loads(pickle.dumps(BadFileError('a.png: broken', 'a.png')))
    assert (str(error), error.path) == ('a.png: broken', 'a.png')


def test_write_image_raises_naming_the_file_and_leaves_nothing_half_written(tmp_path):
    blocker = tmp_path / 'labels'
    blocker.write_text('a file where a folder should be')
    with pytest.raises(OSError, match=f'cannot write {blocker}/a.png'):
        write_image(str(blocker / 'a.png'), np.zeros((4, 4), np.uint8))
    with pytest.raises(OSError, match=r'cannot write .*a\.nope: OpenCV cannot encode'):
        write_image(str(tmp_path / 'a.nope'), np.zeros((4, 4), np.uint8))
    path = write_image(str(tmp_path / 'ok' / 'a.png'), np.full((4, 4), 7, np.uint8))
    assert (cv2.imread(path, cv2.IMREAD_UNCHANGED) == 7).all()
    assert sorted(os.listdir(tmp_path)) == ['labels', 'ok'] and os.listdir(tmp_path / 'ok') == ['a.png']


def test_text_files_in_another_encoding_are_named(tmp_path):
    path = tmp_path / 'val.txt'
    path.write_text('a.jpg a.png\n', encoding='utf-16')
    with pytest.raises(ValueError, match=f'{path}: list file is not UTF-8 text'):
        read_list(str(path))
    path.write_bytes('a.jpg a.png\n'.encode('utf-16-le'))        # no BOM: NUL bytes
    with pytest.raises(ValueError, match=f'{path}: list file holds NUL bytes'):
        read_list(str(path))
    path.write_text('\ufeffa.jpg a.png\n')                        # a UTF-8 BOM is fine
    assert read_text(str(path)) == 'a.jpg a.png\n'


def test_a_folder_is_not_called_missing(tmp_path):
    with pytest.raises(IsADirectoryError, match=f'query image {tmp_path} is a folder, not a file'):
        require_file(str(tmp_path), 'query image')


def support_mask_of(path):
    """What predict_sccan.py makes of a support-mask file: (foreground, warnings)."""
    from util.files.image_io import read_mask
    from util.prediction.predictor import foreground_of, mask_warnings
    mask = read_mask(str(path))
    foreground = foreground_of(mask, path.name)
    return foreground, mask_warnings(mask, foreground, path.name)


def disc_with_stripes():
    mask = np.zeros((120, 160), np.uint8)
    cv2.circle(mask, (80, 60), 40, 255, -1)
    mask[:, ::16] = 255
    return mask


def test_a_cut_out_mask_gives_the_foreground_of_its_alpha_channel(tmp_path):
    """Colours all black, the object opaque and the rest transparent (an editor's cut-out)."""
    shape = disc_with_stripes()
    rgba = np.zeros(shape.shape + (4,), np.uint8)
    rgba[:, :, 3] = shape
    cv2.imwrite(str(tmp_path / 'cut.png'), rgba)
    foreground, warnings = support_mask_of(tmp_path / 'cut.png')
    assert np.array_equal(foreground, shape == 255) and warnings == []
    rgba[:, :, 2] = shape                 # colours that carry the mask win over transparency
    rgba[:, :, 3] = 255 - shape
    cv2.imwrite(str(tmp_path / 'red.png'), rgba)
    assert np.array_equal(support_mask_of(tmp_path / 'red.png')[0], shape == 255)


def test_an_inverted_mask_is_warned_of_and_a_large_object_is_not(tmp_path):
    from util.prediction.predictor import MASK_RULE
    disc = np.zeros((120, 160), np.uint8)
    cv2.circle(disc, (80, 60), 40, 255, -1)
    cv2.imwrite(str(tmp_path / 'inverted.png'), 255 - disc)
    foreground, warnings = support_mask_of(tmp_path / 'inverted.png')
    assert 0.5 < foreground.mean() < 0.995 and warnings == [
        f'inverted.png: its foreground ({foreground.mean():.1%} of it) fills the whole border and '
        f'surrounds the rest, as a background does: an inverted mask? ({MASK_RULE})']
    close_up = np.zeros((120, 160), np.uint8)
    close_up[8:, :150] = 255                  # an object filling most of the image, not its top
    cv2.imwrite(str(tmp_path / 'close_up.png'), close_up)
    assert support_mask_of(tmp_path / 'close_up.png')[1] == []


def test_a_black_and_white_mask_saved_as_jpeg_is_no_label_map(tmp_path):
    """JPEG turns 0 and 255 into many nearby grey levels: compression noise, not class ids."""
    shape = disc_with_stripes()
    cv2.imwrite(str(tmp_path / 'mask.jpg'), shape, [cv2.IMWRITE_JPEG_QUALITY, 75])
    foreground, warnings = support_mask_of(tmp_path / 'mask.jpg')
    assert warnings == [] and (foreground == (shape == 255)).mean() > 0.99
