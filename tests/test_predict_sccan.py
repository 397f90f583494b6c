"""predict_sccan.py and FewShotSegmenter end to end on a tiny real SCCAN (random weights)."""
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import predict_sccan
from helpers import run_cli
from model import SCCAN, build_sccan
from model.checkpoint import weights_checkpoint
from util.files.writer import save_checkpoint
from util.prediction.predictor import FewShotSegmenter

VAL = 57


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A 1-shot checkpoint of the tiny model in our format (weights, architecture, shot, config)."""
    torch.manual_seed(0)
    net = build_sccan('tiny').eval()
    path = str(tmp_path_factory.mktemp('ckpt') / 'tiny.pth')
    save_checkpoint(weights_checkpoint(net, epoch=0, shot=1, config={'shot': 1, 'val_size': VAL}), path)
    return net, path


def random_pair(rng, h, w):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4:h // 2, w // 4:3 * w // 4] = 1
    return image, mask


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = {'out': str(tmp_path / 'out')}
    for name, (h, w) in {'s1': (50, 61), 's2': (70, 40)}.items():
        image, mask = random_pair(rng, h, w)
        paths[name] = (str(tmp_path / f'{name}.jpg'), str(tmp_path / f'{name}.png'))
        cv2.imwrite(paths[name][0], image)
        cv2.imwrite(paths[name][1], mask * 255)
    for name, (h, w) in {'q1': (45, 101), 'q2': (70, 33)}.items():
        paths[name] = str(tmp_path / f'{name}.png')
        cv2.imwrite(paths[name], rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return paths


def test_cli_two_shots_two_queries(checkpoint, files, capsys, monkeypatch):
    encoded = []
    encode = SCCAN.encode
    monkeypatch.setattr(SCCAN, 'encode', lambda self, x: encoded.append(len(x)) or encode(self, x))
    code, out, err = run_cli(predict_sccan.main, [
        '--weight', checkpoint[1], '--device', 'cpu', '--support', *files['s1'],
        '--support', *files['s2'], '--query', files['q1'], files['q2'], '--out', files['out']],
        capsys)
    assert code == 0, err
    assert encoded == [2, 1, 1]                           # supports once, then each query
    assert 'trained with 1 shot(s); running it with 2' in err
    for name, size in (('q1', (45, 101)), ('q2', (70, 33))):
        mask = cv2.imread(os.path.join(files['out'], f'{name}_mask.png'), cv2.IMREAD_UNCHANGED)
        assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
        said = f'foreground {(mask == 255).mean():.1%}' if (mask == 255).any() else 'nothing found'
        assert f'{files[name]}: {said}' in out
        assert os.path.isfile(os.path.join(files['out'], f'{name}_overlay.png'))


def test_cli_says_when_nothing_was_found(checkpoint, files, capsys, tmp_path):
    net = build_sccan('tiny').eval()
    with torch.no_grad():
        net.cls_meta[3].bias.copy_(torch.tensor([50.0, -50.0]))     # background everywhere
    blind = str(tmp_path / 'blind.pth')
    save_checkpoint(weights_checkpoint(net, shot=1), blind)
    code, out, err = run_cli(predict_sccan.main, [
        '--weight', blind, '--device', 'cpu', '--support', *files['s1'], '--query', files['q1'],
        '--out', files['out']], capsys)
    assert code == 0, err
    assert out == (f"{files['q1']}: nothing found: no pixel is foreground (the model sees no "
                   f"object like the supports') -> {os.path.join(files['out'], 'q1_mask.png')}, "
                   f"{os.path.join(files['out'], 'q1_overlay.png')}\n")


def test_api_equals_the_full_forward_cropped(checkpoint):
    """from_checkpoint infers layers and val_size; its probabilities are the net's own forward on
    the val canvas, cropped to the valid region and resized to the query's size."""
    net, path = checkpoint
    seg = FewShotSegmenter.from_checkpoint(path, device='cpu')
    assert seg.val_size == VAL and seg.trained_shot == 1
    rng = np.random.default_rng(1)
    image, mask = random_pair(rng, 80, 52)
    query = rng.integers(0, 256, (45, 101, 3), dtype=np.uint8)
    prob = seg.probabilities([image], [mask], query)
    assert prob.shape == (45, 101)

    with torch.no_grad():
        query_canvas, _ = seg._canvas(query, np.zeros((45, 101), bool), 'q')
        support_canvas, label = seg._canvas(image, mask == 1, 's')
        logits = net(query_canvas[None], support_canvas[None, None], label[None, None])
    logits = F.interpolate(logits[:, :, :24, :56], size=(45, 101), mode='bilinear',
                           align_corners=False)          # valid region of 45×101 at 57: 24×56
    np.testing.assert_allclose(prob, torch.softmax(logits, 1)[0, 1].numpy(), atol=1e-5)
    np.testing.assert_array_equal(seg.segment([image], [mask], query), prob > 0.5)


def _bad_checkpoint(tmp_path, checkpoint, case):
    net, path = checkpoint
    if case == 'missing':
        return str(tmp_path / 'nope.pth')
    bad = tmp_path / f'{case}.pth'
    if case == 'not a checkpoint':
        bad.write_text('hello')
    elif case == 'nan weights':
        state = net.state_dict()
        state['cls_meta.3.bias'] = torch.full_like(state['cls_meta.3.bias'], float('nan'))
        torch.save({'state_dict': state, 'architecture': dict(net.architecture)}, bad)
    elif case == 'wrong architecture':     # no variant's weights, no architecture: the paper's is built
        torch.save({'epoch': 0, 'state_dict': {f'module.{k}': v for k, v in
                                               build_sccan('tiny', depth=3).state_dict().items()}}, bad)
    return str(bad)


@pytest.mark.parametrize('case, extra, message', [
    ('missing', [], 'checkpoint not found'),
    ('not a checkpoint', [], 'not a readable PyTorch checkpoint'),
    ('wrong architecture', [],
     "ResNet-14 SCCAN, the paper's architecture, as the checkpoint states none) does not fit "
     'SCCAN: missing keys'),
    ('good', ['--layers', '101'], 'holds a ResNet-14 SCCAN but layers 101 was asked for; leave '
                                  'layers out to build what it holds'),
    ('nan weights', [], 'nan weights.pth holds NaN or infinite values in 1 of its tensors (cls_meta.3.bias)'),
])
def test_cli_checkpoint_errors(case, extra, message, checkpoint, files, capsys, tmp_path):
    weight = checkpoint[1] if case == 'good' else _bad_checkpoint(tmp_path, checkpoint, case)
    code, _, err = run_cli(predict_sccan.main, [
        '--weight', weight, '--device', 'cpu', '--support', *files['s1'], '--query', files['q1'],
        '--out', files['out'], *extra], capsys)
    assert code == 2
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err, err


@pytest.mark.parametrize('which, what', [(0, 'support image'), (1, 'support mask')])
def test_a_missing_support_file_is_named_as_such(which, what, checkpoint, files, capsys, tmp_path):
    support = list(files['s1'])
    support[which] = str(tmp_path / 'suport.png')       # a typo
    code, _, err = run_cli(predict_sccan.main, [
        '--weight', checkpoint[1], '--device', 'cpu', '--support', *support, '--query', files['q1'],
        '--out', files['out']], capsys)
    assert code == 2 and err == f'error: {what} not found: {support[which]}\n'


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cli_cuda_without_gpu(checkpoint, files, capsys):
    code, _, err = run_cli(predict_sccan.main, [
        '--weight', checkpoint[1], '--device', 'cuda', '--support', *files['s1'],
        '--query', files['q1'], '--out', files['out']], capsys)
    assert code == 2 and err.startswith('error: device cuda was asked for but PyTorch sees no CUDA')
