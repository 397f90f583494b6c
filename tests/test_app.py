"""The browser app (tools/app.py over util/prediction/app.py): the same masks as predict_sccan.py
byte for byte, each bad input answered in words, the optional extras, and the page driven in
headless Chromium (skipped without Gradio, Playwright or /usr/bin/chromium, unless
SCCAN_REQUIRE_BROWSER=1, as in CI, makes that a failure)."""
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile

import cv2
import numpy as np
import pytest
import torch

import predict_sccan
from helpers import assert_one_error, run_cli
from model import SCCAN, build_sccan
from model.checkpoint import weights_checkpoint
from tools import app as app_tool
from util.config import REPO_ROOT
from util.datasets.synthetic import write_benchmark
from util.files.image_io import read_label, read_rgb
from util.files.writer import save_checkpoint
from util.folds import novel_classes
from util.prediction.app import (EXAMPLE_CLASS, SHOWN_SIDE, SegmentationApp, SupportSlot,
                                 find_checkpoints, painted_mask)
from util.prediction.predictor import FewShotSegmenter

VAL = 57
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync']


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    """A small synthetic benchmark and the example the app picks from it: support 1 (image and
    0/255 mask file), and three more images of the same class."""
    root = str(tmp_path_factory.mktemp('synthetic'))
    write_benchmark(root, seed=0, n_train=1, n_val=48)
    app = SegmentationApp(str(tmp_path_factory.mktemp('example')), device='cpu')
    image, mask, others = app.synthetic_example(root, queries=3)
    return {'root': root, 'image': image, 'mask': mask, 'others': others}


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, bench):
    """The tiny SCCAN, random, with its foreground bias set so that about half of a query's
    pixels are foreground: masks that depend on every logit, not all background."""
    torch.manual_seed(0)
    net = build_sccan('tiny').eval()
    seg = FewShotSegmenter(net, val_size=VAL)
    prob = seg.probabilities([read_rgb(bench['image'])], [cv2.imread(bench['mask'], 0)],
                             read_rgb(bench['others'][1])).astype(np.float64)
    with torch.no_grad():
        net.cls_meta[3].bias[1] -= float(np.median(np.log(prob / (1 - prob))))
    path = str(tmp_path_factory.mktemp('exp') / 'toy' / 'snapshot' / 'small.pth')
    save_checkpoint(weights_checkpoint(net, epoch=0, shot=1, config={'shot': 1, 'val_size': VAL}),
                    path)
    return path


@pytest.fixture(scope='module')
def running_app(tmp_path_factory):
    """One app for many requests, as the page keeps it."""
    return SegmentationApp(str(tmp_path_factory.mktemp('app')), device='cpu')


def painting(foreground):
    """The ImageEditor's value after the object was painted (half transparent brush)."""
    layer = np.zeros(foreground.shape + (4,), np.uint8)
    layer[foreground] = (0, 120, 255, 128)
    return {'background': None, 'layers': [layer], 'composite': None}


def decode(png):
    """H×W uint8 of single-channel PNG bytes."""
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)


def label_of(bench, image):
    """The benchmark's label of (a copy of) one of its images."""
    name = os.path.splitext(os.path.basename(image))[0]
    return read_label(os.path.join(bench['root'], 'SegmentationClassAug', name + '.png'))


def cli_masks(checkpoint, supports, queries, out, capsys):
    """{query file name: mask PNG bytes} written by predict_sccan.py."""
    argv = ['--weight', checkpoint, '--device', 'cpu', '--query', *queries, '--out', out]
    for image, mask in supports:
        argv += ['--support', image, mask]
    code, _, err = run_cli(predict_sccan.main, argv, capsys)
    assert code == 0, err
    return {os.path.basename(q): open(os.path.join(out, os.path.splitext(os.path.basename(q))[0]
                                                   + '_mask.png'), 'rb').read() for q in queries}


# --- the same answer as the command line ---------------------------------------------------------
def test_app_masks_are_the_command_lines_byte_for_byte(checkpoint, bench, tmp_path, capsys,
                                                       monkeypatch):
    """One uploaded mask file and one painted mask; two queries; the zip holds the masks as
    used, with which predict_sccan.py gives the same bytes. Supports are encoded once, and again
    only when they change."""
    encoded = []
    encode = SCCAN.encode
    monkeypatch.setattr(SCCAN, 'encode', lambda self, x: encoded.append(len(x)) or encode(self, x))
    second, queries = bench['others'][0], bench['others'][1:]
    painted = label_of(bench, second) == np.unique(
        label_of(bench, bench['image'])[cv2.imread(bench['mask'], 0) > 0])[0]
    painted_file = str(tmp_path / 'painted.png')
    cv2.imwrite(painted_file, painted.astype(np.uint8) * 255)
    app = SegmentationApp(str(tmp_path / 'app'), device='cpu')
    slots = [SupportSlot(bench['image'], None, bench['mask']),
             SupportSlot(second, painting(painted), None)] + [SupportSlot()] * 3

    result = app.run(checkpoint, slots, queries)
    assert encoded == [2, 1, 1], result.messages                  # supports once, then each query
    assert result.messages.splitlines()[0] == '2 queries segmented with small.pth and 2 supports.'
    expected = cli_masks(checkpoint, [(bench['image'], bench['mask']), (second, painted_file)],
                         queries, str(tmp_path / 'cli'), capsys)
    files = {os.path.basename(p): open(p, 'rb').read() for p in result.downloads[:-1]}
    assert {name.replace('_mask.png', '.jpg'): data for name, data in files.items()} == expected
    for data in files.values():               # masks that depend on the logits, not constant
        assert 0.05 < (decode(data) > 0).mean() < 0.95
    with zipfile.ZipFile(result.downloads[-1]) as z:
        zipped = {name: z.read(name) for name in z.namelist()}
    assert zipped.keys() == {*files, 'supports/support1_mask.png', 'supports/support2_mask.png'}
    assert all(zipped[name] == data for name, data in files.items())
    np.testing.assert_array_equal(decode(zipped['supports/support1_mask.png']),
                                  cv2.imread(bench['mask'], 0))
    np.testing.assert_array_equal(decode(zipped['supports/support2_mask.png']), painted * 255)
    assert [caption for _, caption in result.overlays] == [os.path.basename(q) for q in queries]

    encoded.clear()
    app.run(checkpoint, slots, queries[:1])                        # same supports: reused
    slots[1] = SupportSlot(second, painting(np.roll(painted, 3, axis=1)), None)
    app.run(checkpoint, slots, queries[:1])                        # a support changed
    assert encoded == [1, 2, 1]


# --- bad input, in words -------------------------------------------------------------------------
def _bad_inputs(tmp_path, bench, checkpoint, case):
    """(checkpoint, slots, queries) of one bad input."""
    image, mask = bench['image'], bench['mask']
    good = [SupportSlot(image, None, mask)]
    text = tmp_path / 'notes.png'
    text.write_text('not an image')
    if case == 'no support':
        return checkpoint, [SupportSlot()] * 5, [image]
    if case == 'no query':
        return checkpoint, good, []
    if case == 'no checkpoint':
        return '  ', good, [image]
    if case == 'nothing painted':
        return checkpoint, [SupportSlot(image, painting(np.zeros((1, 1), bool)), None)], [image]
    if case == 'empty mask file':
        cv2.imwrite(str(tmp_path / 'zeros.png'), np.zeros(read_rgb(image).shape[:2], np.uint8))
        return checkpoint, [SupportSlot(image, None, str(tmp_path / 'zeros.png'))], [image]
    if case == 'mask of another size':
        cv2.imwrite(str(tmp_path / 'small.png'), np.full((10, 12), 255, np.uint8))
        return checkpoint, [SupportSlot(image, None, str(tmp_path / 'small.png'))], [image]
    if case == 'painted on another image':
        return checkpoint, [SupportSlot(image, painting(np.ones((10, 12), bool)), None)], [image]
    if case == 'mask without image':
        return checkpoint, [SupportSlot(None, None, mask)], [image]
    if case == 'support not an image':
        return checkpoint, [SupportSlot(str(text), None, mask)], [image]
    if case == 'checkpoint missing':
        return str(tmp_path / 'nope.pth'), good, [image]
    if case == 'checkpoint not loadable':
        return str(text), good, [image]
    if case == 'checkpoint does not fit':        # its weights are of a net one SCCA block deeper
        stored = torch.load(checkpoint, weights_only=False)
        stored['architecture']['depth'] -= 1
        torch.save(stored, tmp_path / 'other.pth')
        return str(tmp_path / 'other.pth'), good, [image]
    raise AssertionError(case)


@pytest.mark.parametrize('case, message', [
    ('no support', 'error: no support: upload a support image and paint the object on it'),
    ('no query', 'error: no query: upload the image(s) to segment'),
    ('no checkpoint', 'error: no checkpoint: choose one found under exp/ or type its path'),
    ('nothing painted', 'error: support 1: empty mask: paint the object on the image with the '
                        'brush, or upload its mask file'),
    ('empty mask file', 'error: support 1 mask zeros.png has no foreground pixels'),
    ('mask of another size', 'error: support 1 mask small.png is 10×12 (H×W) but support 1 image '
                             'syn_val_'),
    ('painted on another image', 'error: support 1 mask (painted) is 10×12 (H×W) but support 1 '
                                 'image syn_val_'),
    ('mask without image', 'error: support 1: a mask file but no image; upload the image'),
    ('support not an image', 'notes.png: cannot be decoded as an image'),
    ('checkpoint missing', 'error: checkpoint not found: '),
    ('checkpoint not loadable', 'notes.png: not a readable PyTorch checkpoint'),
    ('checkpoint does not fit', 'does not fit SCCAN: unexpected keys (24): transformer.'),
])
def test_bad_input_is_a_message_and_the_app_goes_on(case, message, checkpoint, bench, tmp_path,
                                                     running_app):
    """Each bad input is one `error:` line, and the same app then segments a good input."""
    app = running_app
    result = app.run(*_bad_inputs(tmp_path, bench, checkpoint, case))
    assert message in result.messages and result.messages.startswith('error: '), result.messages
    assert '\n' not in result.messages and not result.downloads and not result.overlays
    good = app.run(checkpoint, [SupportSlot(bench['image'], None, bench['mask'])],
                   bench['others'][:1])
    assert good.messages.startswith('1 query segmented with small.pth and 1 support.'), good.messages


def test_a_bad_query_is_reported_and_the_others_segmented(checkpoint, bench, tmp_path, running_app):
    text = tmp_path / 'notes.png'
    text.write_text('not an image')
    app = running_app
    result = app.run(checkpoint, [SupportSlot(bench['image'], None, bench['mask'])],
                     [str(text), bench['others'][0]])
    lines = result.messages.splitlines()
    assert lines[0] == '1 of 2 queries segmented with small.pth and 1 support.'
    assert lines[1] == f'error: {text}: cannot be decoded as an image'
    assert [os.path.basename(p) for p in result.downloads] == [
        os.path.basename(bench['others'][0]).replace('.jpg', '_mask.png'), 'sccan_masks.zip']


def test_an_empty_prediction_and_a_single_query_say_so(bench, tmp_path, running_app):
    """A model that finds nothing: said in the messages and under the picture, not
    'foreground 0.0%'; one query of one is '1 query segmented', not '1 of 1 queries'."""
    net = build_sccan('tiny').eval()
    with torch.no_grad():
        net.cls_meta[3].bias.copy_(torch.tensor([50.0, -50.0]))     # background everywhere
    blind = str(tmp_path / 'blind.pth')
    save_checkpoint(weights_checkpoint(net, shot=1), blind)
    query = bench['others'][0]
    result = running_app.run(blind, [SupportSlot(bench['image'], None, bench['mask'])], [query])
    name = os.path.basename(query)
    assert result.messages.splitlines() == [
        '1 query segmented with blind.pth and 1 support.',
        f"{name}: nothing found: no pixel is foreground (the model sees no object like the "
        "supports')"]
    assert [caption for _, caption in result.overlays] == [f'{name}: nothing found']


def test_a_huge_query_is_shown_fitted_and_its_mask_kept_whole(checkpoint, bench, tmp_path,
                                                               running_app):
    huge = str(tmp_path / 'huge.png')
    cv2.imwrite(huge, cv2.resize(cv2.imread(bench['others'][0]), (1500, 1000)))
    result = running_app.run(checkpoint, [SupportSlot(bench['image'], None, bench['mask'])], [huge])
    (overlay, _), = result.overlays
    assert max(cv2.imread(overlay).shape[:2]) == SHOWN_SIDE == 1280
    assert cv2.imread(result.downloads[0], 0).shape == (1000, 1500)


def test_uploads_named_by_their_own_name(bench, tmp_path):
    """A file the page uploaded lies in the app's folder: messages name it, not its path."""
    app = SegmentationApp(str(tmp_path / 'app'), device='cpu')
    upload = tmp_path / 'app' / 'gradio' / '5f3a' / 'cat photo.png'
    upload.parent.mkdir(parents=True)
    upload.write_text('not an image')
    editor, note = app.show_support(1, str(upload), None)
    assert editor is None and note == 'error: cat photo.png: cannot be decoded as an image'


def test_support_shown_for_painting(bench, tmp_path):
    app = SegmentationApp(str(tmp_path / 'app'), device='cpu')
    rgb = read_rgb(bench['image'])
    editor, note = app.show_support(2, bench['image'], None)
    np.testing.assert_array_equal(editor['background'], rgb)
    assert editor['layers'] == [] and note.startswith(f'{rgb.shape[0]}×{rgb.shape[1]} image: paint')
    foreground = cv2.imread(bench['mask'], 0) > 0
    editor, note = app.show_support(2, bench['image'], bench['mask'])
    assert note.startswith(f'mask from {os.path.basename(bench["mask"])}: '
                           f'{foreground.mean():.1%} of the image (outlined in blue')
    changed = (editor['background'] != rgb).any(axis=2)      # the outline: 3 pixels wide
    kernel = np.ones((5, 5), np.uint8)
    inside = cv2.erode(foreground.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                       borderValue=0)        # the frame bounds the object too: outlined there
    boundary = cv2.dilate(foreground.astype(np.uint8), kernel) > inside
    assert (changed <= boundary).all() and changed.sum() > 0.5 * boundary.sum()
    cv2.imwrite(str(tmp_path / 'small.png'), np.full((10, 12), 255, np.uint8))
    assert app.show_support(2, bench['image'], str(tmp_path / 'small.png'))[1].startswith(
        'error: support 2 mask small.png is 10×12 (H×W) but support 2 image ')
    assert app.show_support(2, None, bench['mask']) == (
        None, 'error: upload the image of this mask first')


def test_a_painted_mask_says_what_it_covers(bench, tmp_path):
    """As a mask file's share is shown, the paint's (or its box's) is, whenever it changes."""
    app = SegmentationApp(str(tmp_path / 'app'), device='cpu')
    h, w = read_rgb(bench['image']).shape[:2]
    stroke = np.zeros((h, w), bool)
    stroke[10:20, 10:60] = True
    stroke[30, 70] = True
    assert app.slot_note(1, SupportSlot(bench['image'], painting(stroke))) == \
        f'painted: {stroke.mean():.1%} of the image.'
    assert app.slot_note(1, SupportSlot(bench['image'], painting(stroke), box=True)) == \
        f'painted: {21 * 61 / (h * w):.1%} of the image (the box around the paint).'
    assert app.slot_note(1, SupportSlot(bench['image'], painting(np.zeros_like(stroke)))) == \
        f'{h}×{w} image: paint the object with the brush, or upload its mask file.'
    assert app.slot_note(1, SupportSlot(bench['image'], painting(stroke), bench['mask'])).startswith(
        'mask from ')                                               # the file wins, as in a run


def test_box_is_the_box_around_the_paint():
    """One diagonal stroke from corner to corner, with the box option: the box between them."""
    stroke = np.zeros((20, 30), bool)
    stroke[np.arange(4, 12), np.arange(6, 22, 2)] = True          # (4, 6) to (11, 20)
    box = np.zeros((20, 30), bool)
    box[4:12, 6:21] = True
    np.testing.assert_array_equal(painted_mask(1, SupportSlot('x.jpg', painting(stroke))), stroke)
    np.testing.assert_array_equal(
        painted_mask(1, SupportSlot('x.jpg', painting(stroke), box=True)), box)


def test_checkpoints_found_under_exp(tmp_path):
    runs = [tmp_path / 'synthetic' / 'pascal' / 'SCCAN' / 'split0' / 'resnet50' / 'snapshot',
            tmp_path / 'other' / 'snapshot']
    for folder, name, age in ((runs[0], 'train_latest.pth', 10), (runs[1], 'best.pth', 0)):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b'x')
        os.utime(folder / name, (time.time() - age,) * 2)
    (runs[0] / '.train_latest.pth.abcdefgh.tmp').write_bytes(b'x')     # a write in progress
    (tmp_path / 'synthetic' / 'untrained.pth').write_bytes(b'x')        # not a run's snapshot
    assert find_checkpoints(str(tmp_path)) == [str(runs[1] / 'best.pth'),
                                               str(runs[0] / 'train_latest.pth')]


def test_synthetic_example(bench):
    """Support and queries show the example class, a class fold 0 never trains on; the mask
    is that class's pixels."""
    assert EXAMPLE_CLASS in novel_classes('pascal', 0)
    label = label_of(bench, bench['image'])
    np.testing.assert_array_equal(cv2.imread(bench['mask'], 0), (label == EXAMPLE_CLASS) * 255)
    assert all((label_of(bench, q) == EXAMPLE_CLASS).mean() >= 0.05 for q in bench['others'])
    for copy in (bench['image'], *bench['others']):
        original = os.path.join(bench['root'], 'JPEGImages', os.path.basename(copy))
        assert open(copy, 'rb').read() == open(original, 'rb').read()


def test_synthetic_example_needs_the_benchmark(tmp_path):
    app = SegmentationApp(str(tmp_path / 'app'))
    with pytest.raises(FileNotFoundError, match='list file not found'):
        app.synthetic_example(str(tmp_path / 'nothing'))


# --- the command and its optional extras ---------------------------------------------------------
def test_without_gradio_one_line_names_the_extras(tmp_path):
    """Gradio made unimportable: one error line naming requirements-app.txt, status 2, and no
    temporary folder left."""
    code = ("import runpy, sys; sys.modules['gradio'] = None; sys.argv = ['tools/app.py', "
            "'--port', '0']; runpy.run_path('tools/app.py', run_name='__main__')")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert_one_error(done.returncode, done.stderr, 'error: the app needs Gradio, an optional '
                     'extra: pip install -r requirements-app.txt')
    assert os.listdir(tmp_path) == []


def test_nothing_but_the_app_imports_gradio():
    users = []
    for folder, _, names in os.walk(REPO_ROOT):
        if any(part.startswith('.') for part in folder.split(os.sep)) or 'data' in folder.split(os.sep):
            continue
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith('.py') and re.search(r'^\s*(import|from)\s+gradio\b',
                                                  open(path).read(), re.MULTILINE):
                users.append(os.path.relpath(path, REPO_ROOT))
    assert users == [os.path.join('tools', 'app.py')]


def test_taken_port_is_one_clear_error(capsys):
    import socket
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(app_tool.main, ['--port', str(port)], capsys, (ImportError, 'error', 2))
    assert_one_error(code, err, f'port {port} on 127.0.0.1 is taken', '--port 0 for any free one')


def test_a_runs_folder_that_is_not_there_is_one_clear_error(tmp_path, capsys):
    code, _, err = run_cli(app_tool.main, ['--exp', str(tmp_path / 'runs')], capsys)
    assert_one_error(code, err, f'--exp {tmp_path / "runs"}: no such folder')


# --- the page in a real browser ------------------------------------------------------------------
def browser_or_skip():
    """Playwright's (sync_playwright, expect) when the browser test can run; otherwise skip, or
    fail when SCCAN_REQUIRE_BROWSER=1."""
    missing = [what for what, ok in (
        ('Gradio (pip install -r requirements-app.txt)', importlib.util.find_spec('gradio')),
        ('Playwright (pip install -r requirements-app.txt)', importlib.util.find_spec('playwright')),
        (f'Chromium at {CHROMIUM} (apt-get install chromium)', os.path.isfile(CHROMIUM)))
        if not ok]
    if missing:
        reason = 'browser test needs ' + ', '.join(missing)
        if os.environ.get('SCCAN_REQUIRE_BROWSER') == '1':
            pytest.fail(reason + ' (SCCAN_REQUIRE_BROWSER=1)')
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright
    return sync_playwright, expect


@pytest.fixture
def served(tmp_path, checkpoint):
    """tools/app.py on a free port, started in an empty folder with an empty HOME and TMPDIR;
    yields (Playwright's (sync_playwright, expect), the page's address). Once stopped with SIGTERM, its
    temporary folder is gone and the three folders are still empty."""
    playwright = browser_or_skip()
    cwd, tmp, home = tmp_path / 'cwd', tmp_path / 'tmp', tmp_path / 'home'
    for folder in (cwd, tmp, home):
        folder.mkdir()
    log = tmp_path / 'app.log'
    exp = os.path.dirname(os.path.dirname(os.path.dirname(checkpoint)))
    with open(log, 'w') as output:
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO_ROOT, 'tools', 'app.py'), '--port', '0', '--exp',
             exp, '--device', 'cpu', '--data', str(tmp_path / 'no-data')],
            cwd=cwd, env=dict(os.environ, TMPDIR=str(tmp), HOME=str(home)), stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = wait_for(lambda: re.match(r'SCCAN app on (http://127\.0\.0\.1:\d+) .* temporary '
                                          r'files in (\S+),', log.read_text()), process, log)
        url, workdir = found.groups()
        wait_for(lambda: page_answers(url), process, log)
        yield playwright, url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert not os.path.exists(workdir), 'the temporary folder outlived the app'
    assert os.listdir(cwd) == os.listdir(tmp) == os.listdir(home) == []


def wait_for(ready, process, log, seconds=60):
    """ready()'s first true answer, polled while the app runs (its log on failure)."""
    deadline = time.time() + seconds
    while not (answer := ready()):
        assert process.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.2)
    return answer


def page_answers(url):
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


def test_browser_paint_run_download(served, bench, checkpoint, tmp_path, capsys):
    """Upload support 1 with its mask, paint support 2 with mouse strokes, upload a query, run,
    download the mask and the zip: the mask is predict_sccan.py's with the supports as used."""
    (sync_playwright, expect), url = served
    second, query = bench['others'][0], bench['others'][1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={'width': 1280, 'height': 1400}, accept_downloads=True)
            page.goto(url)
            page.locator('#run').click()                      # nothing given yet: said in words
            expect(page.locator('#messages textarea')).to_have_value(
                re.compile('^error: no support: upload a support image'))
            page.locator('#support-1-image input[type=file]').set_input_files(bench['image'])
            page.locator('#support-1-mask input[type=file]').set_input_files(bench['mask'])
            page.get_by_text('mask from ').wait_for()
            page.get_by_role('tab', name='Support 2').click()
            page.locator('#support-2-image input[type=file]').set_input_files(second)
            page.locator('#support-2-note').get_by_text('image: paint the object').wait_for()
            paint_strokes(page, page.locator('#support-2-editor canvas').first)
            page.locator('#queries input[type=file]').set_input_files([query])
            page.locator('#run').click()
            page.locator('#downloads a').nth(1).wait_for(timeout=60_000)
            messages = page.locator('#messages textarea').input_value()
            downloads = {}
            for link in page.locator('#downloads a').all():
                with page.expect_download() as download:
                    link.click()
                downloads[download.value.suggested_filename] = open(download.value.path(), 'rb').read()
        finally:
            browser.close()
    assert messages.startswith('1 query segmented with small.pth and 2 supports.'), messages
    name = os.path.basename(query).replace('.jpg', '_mask.png')
    assert sorted(downloads) == sorted([name, 'sccan_masks.zip'])
    used = {}
    with zipfile.ZipFile(io.BytesIO(downloads['sccan_masks.zip'])) as z:
        assert z.read(name) == downloads[name]
        for k in (1, 2):
            used[k] = str(tmp_path / f'support{k}_mask.png')
            with open(used[k], 'wb') as f:
                f.write(z.read(f'supports/support{k}_mask.png'))
    np.testing.assert_array_equal(cv2.imread(used[1], 0), cv2.imread(bench['mask'], 0))
    painted = cv2.imread(used[2], 0) > 0
    assert 0.002 < painted.mean() < 0.5, painted.mean()          # the strokes, and only them
    expected = cli_masks(checkpoint, [(bench['image'], bench['mask']), (second, used[2])],
                         [query], str(tmp_path / 'cli'), capsys)
    assert downloads[name] == expected[os.path.basename(query)]


def paint_strokes(page, canvas):
    """Two mouse strokes across the middle of the editor's canvas."""
    box = canvas.bounding_box()
    x, y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
    for dy in (-6, 6):
        page.mouse.move(x - 30, y + dy)
        page.mouse.down()
        page.mouse.move(x + 30, y + dy + 15, steps=4)
        page.mouse.up()
