"""tools/weights.py on archives built here in the authors' layout: their exp.zip
(exp/<data_set>/SCCAN/split<k>/resnet<L>/snapshot/<name>.pth, their checkpoint format) and their
backbones (initmodel/resnet50_v2.pth, PSPNet's plain state dict), with the clutter archives
carry; what goes where, the SHA-256 printed, the configs matched, and every refusal."""
import hashlib
import io
import os
import zipfile

import pytest
import torch

from helpers import assert_one_error, files_below, run_cli
from model import build_sccan
from model.checkpoint import weights_checkpoint
from tools import weights as tool
from util.config import REPO_ROOT
from util.files.run_paths import shot_in_name

AUTHORS_R50 = 'exp/pascal/SCCAN/split0/resnet50/snapshot/win8_train_epoch_43_0.6753.pth'
TINY_RUN = 'exp/pascal/SCCAN/split{}/resnet14/snapshot/'     # where the tiny model's runs go
# A config of the tiny model naming its checkpoint, as the authors' configs name theirs.
TINY_CONFIG = """Data:
  data_root: data
  train_list: data/train.txt
  val_list: data/val.txt
Train:
  split: {split}
  shot: {shot}
  data_set: pascal
Method:
  model: tiny
  backbone_weights:
Test_Finetune:
  weight: {weight}
"""


def saved(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def paper_size_state(layers=50):
    """The paper's SCCAN state dict with every value 0 from one shared element, so that a
    140 MB checkpoint takes a few kB on disk (the keys and shapes are what is checked)."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape)
            for k, v in build_sccan(layers=layers).state_dict().items()}


def tiny_checkpoint(seed=0, **entries):
    torch.manual_seed(seed)
    return saved(weights_checkpoint(build_sccan('tiny'), **entries))


def write_zip(path, members):
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def roots(tmp_path):
    """--exp, --initmodel and --config-dir below tmp_path, the config dir with two configs of
    the tiny model (fold 1: 1-shot and 5-shot), as argv."""
    configs = tmp_path / 'config'
    configs.mkdir()
    for name, shot, weight in (('tiny_split1', 1, 'train_epoch_3_0.5000.pth'),
                               ('tiny_split1_5s', 5, 'elsewhere.pth')):
        (configs / f'{name}.yaml').write_text(TINY_CONFIG.format(split=1, shot=shot, weight=weight))
    return ['--exp', str(tmp_path / 'out' / 'exp'), '--initmodel', str(tmp_path / 'out' / 'initmodel'),
            '--config-dir', str(configs)]


def run(argv, capsys):
    return run_cli(tool.main, argv, capsys)


def test_the_authors_archives_go_where_the_configs_look(tmp_path, capsys):
    """Their checkpoint format at the paper's size (ResNet-50, DDP prefixes) and PSPNet's
    backbone, each checked by loading it, reported with its SHA-256 and the configs it fits."""
    state = paper_size_state()
    checkpoint = saved({'epoch': 42, 'state_dict': {'module.' + k: v for k, v in state.items()},
                        'optimizer': {}, 'optimizer_swin': {}})
    backbone = saved({**{k[len('backbone.body.'):]: v
                         for k, v in state.items() if k.startswith('backbone.body.')},
                      'fc.weight': torch.zeros(1000, 2048), 'fc.bias': torch.zeros(1000)})
    exp_zip = write_zip(tmp_path / 'exp.zip', {
        AUTHORS_R50: checkpoint, 'exp/pascal/SCCAN/split0/resnet50/result/train.log': b'log',
        '__MACOSX/' + os.path.dirname(AUTHORS_R50) + '/._win8_train_epoch_43_0.6753.pth': b'fork'})
    backbones = write_zip(tmp_path / 'backbones.zip', {'initmodel/resnet50_v2.pth': backbone,
                                                       'initmodel/vgg16_bn.pth': b'not ours'})
    exp, initmodel = tmp_path / 'exp', tmp_path / 'initmodel'
    status, out, err = run([exp_zip, backbones, '--exp', str(exp), '--initmodel', str(initmodel)], capsys)
    assert status == 0, err
    assert files_below(tmp_path / 'exp') == {AUTHORS_R50[len('exp/'):]: hashlib.sha1(checkpoint).hexdigest()}
    assert files_below(initmodel) == {'resnet50_v2.pth': hashlib.sha1(backbone).hexdigest()}
    lines = out.splitlines()
    assert lines[:2] == [f'{exp_zip}: 1 weights file(s); 2 other file(s) not needed (logs, other backbones)',
                         f'{backbones}: 1 weights file(s); 1 other file(s) not needed '
                         '(logs, other backbones)']
    assert lines[2:5] == [
        f'ok  {exp / AUTHORS_R50[len("exp/"):]}  (placed, from {exp_zip}:{AUTHORS_R50})',
        f'    sha256 {sha256(checkpoint)}',
        '    ResNet-50 SCCAN, 1-shot; fits config/pascal/pascal_split0_resnet50.yaml (its weight)']
    assert lines[5:7] == [
        f'ok  {initmodel / "resnet50_v2.pth"}  (placed, from {backbones}:initmodel/resnet50_v2.pth)',
        f'    sha256 {sha256(backbone)}']
    assert lines[7].startswith('    ImageNet ResNet-50 backbone; fits the backbone_weights of ')
    assert 'config/pascal/pascal_split0_resnet50.yaml' not in lines[7] or 'e.g.' in lines[7]
    assert lines[8:] == ['2 of 2 weights file(s) load']


def test_a_second_run_and_a_check_in_place_change_nothing(tmp_path, roots, capsys):
    one = tiny_checkpoint(shot=1)
    five = tiny_checkpoint(seed=1, shot=5)
    archive = write_zip(tmp_path / 'exp.zip', {TINY_RUN.format(1) + 'train_epoch_3_0.5000.pth': one,
                                               TINY_RUN.format(1) + 'train5_epoch_7.5_0.6000.pth': five})
    assert run([archive, *roots], capsys)[0] == 0
    out_root = tmp_path / 'out'
    before = {p: os.stat(p).st_mtime_ns for p in out_root.rglob('*.pth')}
    for argv, status in (([archive, *roots], 'in place'), (roots, 'checked')):
        code, out, err = run(argv, capsys)
        assert code == 0 and not err
        assert f'({status}' in out and out.count('ok  ') == 2
        configs = roots[-1]
        assert (f'    sha256 {sha256(one)}\n'
                f'    ResNet-14 SCCAN (model tiny), 1-shot; fits {configs}/tiny_split1.yaml '
                '(its weight)\n') in out
        assert (f'    sha256 {sha256(five)}\n'
                f'    ResNet-14 SCCAN (model tiny), 5-shot; fits {configs}/tiny_split1_5s.yaml\n') in out
        assert {p: os.stat(p).st_mtime_ns for p in out_root.rglob('*.pth')} == before
    assert sorted(os.listdir(out_root / 'exp')) == ['pascal']       # no staging folder left


def test_a_different_file_is_replaced_only_when_asked(tmp_path, roots, capsys):
    name = TINY_RUN.format(1) + 'train_epoch_3_0.5000.pth'
    old, new = tiny_checkpoint(seed=0), tiny_checkpoint(seed=1)
    write_zip(tmp_path / 'old.zip', {name: old})
    assert run([str(tmp_path / 'old.zip'), *roots], capsys)[0] == 0
    other = tiny_checkpoint(seed=2)
    archive = write_zip(tmp_path / 'new.zip', {name: new,
                                               TINY_RUN.format(2) + 'train_epoch_1_0.1000.pth': other})
    before = files_below(tmp_path / 'out')
    status, _, err = run([archive, *roots], capsys)
    assert_one_error(status, err, 'nothing was written',
                     f'train_epoch_3_0.5000.pth exists already and differs from {archive}:{name}; '
                     'pass --overwrite to replace it')
    assert files_below(tmp_path / 'out') == before              # not even the file without a conflict
    status, out, err = run([archive, *roots, '--overwrite'], capsys)
    assert status == 0 and '(replaced, from' in out and '(placed, from' in out
    with open(tmp_path / 'out' / name, 'rb') as f:
        assert f.read() == new


def test_damaged_and_unfitting_files_are_reported_and_not_placed(tmp_path, roots, capsys):
    good = tiny_checkpoint()
    nan = build_sccan('tiny')
    nan.state_dict()['cls_meta.3.bias'].fill_(float('nan'))
    members = {TINY_RUN.format(0) + 'train_epoch_1_0.1000.pth': good,
               TINY_RUN.format(1) + 'train_epoch_1_0.1000.pth': good[:len(good) // 2],      # truncated
               TINY_RUN.format(2) + 'train_epoch_1_0.1000.pth': saved(weights_checkpoint(nan)),
               'exp/pascal/SCCAN/split3/resnet101/snapshot/train_epoch_1_0.1000.pth': good,  # not ResNet-101
               TINY_RUN.format(3) + 'train_epoch_1_0.1000.pth': good}
    archive = write_zip(tmp_path / 'exp.zip', members)
    with open(archive, 'r+b') as f:         # damage the last member's bytes in the archive
        data = f.read()
        at = data.rindex(good[:64]) + len(good) // 2
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))
    status, out, err = run([archive, *roots], capsys)
    assert status == 2 and out.count('ok  ') == 1 and '1 of 5 weights file(s) load; 4 failed' in out
    errors = err.splitlines()
    assert len(errors) == 4 and all(e.startswith('error: ') and e.endswith(' (not placed)') for e in errors)
    shown = [f'{archive}:{name}' for name in members]
    assert f'{shown[1]}: not a readable PyTorch checkpoint' in errors[0]
    assert f'{shown[2]} holds NaN or infinite values in 1 of its tensors (cls_meta.3.bias)' in errors[1]
    assert f'{shown[3]} holds a ResNet-14 SCCAN but its path says resnet101, where the configs of ' \
           'ResNet-101 would read it: is it in the right folder?' in errors[2]
    assert f'{shown[4]}: damaged in its archive (an incomplete download?): Bad CRC-32' in errors[3]
    assert list(files_below(tmp_path / 'out')) == [
        'exp/' + TINY_RUN.format(0)[4:] + 'train_epoch_1_0.1000.pth']


@pytest.mark.parametrize('content, needles', [
    ({'README.txt': b'hello', 'model.pth': b'x'}, ['holds no SCCAN checkpoint in the authors\' layout',
                                                   'resnet50_v2.pth, resnet101_v2.pth']),
    (b'<html>sign in</html>', ['not a complete zip archive (an incomplete download, or a web page saved '
                               'under its name?)']),
])
def test_a_wrong_download_is_named_and_nothing_is_written(tmp_path, roots, capsys, content, needles):
    path = tmp_path / 'exp.zip'
    if isinstance(content, dict):
        write_zip(path, content)
    else:
        path.write_bytes(content)         # e.g. the sign-in page saved under the archive's name
    status, _, err = run([str(path), *roots], capsys)
    assert_one_error(status, err, str(path), *needles)
    assert not (tmp_path / 'out').exists()


def test_a_pth_file_is_one_weights_file_though_torch_writes_zip_archives(tmp_path, roots, capsys):
    path = tmp_path / TINY_RUN.format(1) / 'train_epoch_3_0.5000.pth'
    path.parent.mkdir(parents=True)
    path.write_bytes(tiny_checkpoint(shot=1))
    status, out, err = run([str(path), *roots], capsys)
    assert status == 0 and f'{path}: 1 weights file(s)' in out, err
    assert list(files_below(tmp_path / 'out')) == ['exp/' + TINY_RUN.format(1)[4:] + path.name]


def test_nothing_in_place_says_where_the_weights_come_from(roots, capsys):
    status, _, err = run(roots, capsys)
    assert_one_error(status, err, 'no checkpoint in the authors\' layout below', 'docs/weights.md')


def test_shots_are_read_from_the_authors_names():
    names = {'win8_train_epoch_43_0.6753.pth': 1, 'win8_train5_epoch_150_0.7425.pth': 5,
             'train5_epoch_46.5_0.5641.pth': 5, 'train_latest.pth': 1, 'train5_latest.pth': 5,
             'epoch_10.pth': None, 'best.pth': None}
    assert {name: shot_in_name(name) for name in names} == names


def test_every_config_weight_is_an_authors_name_the_tool_places():
    """The configs name the checkpoints of the authors' exp.zip; each name is one the tool
    recognises, with the shot of its config."""
    import glob
    from util.config import load_config
    for path in glob.glob(os.path.join(REPO_ROOT, 'config', '*', '*_split?_resnet*.yaml')):
        cfg = load_config(path)
        if cfg.weight and cfg.data_set in ('pascal', 'coco'):
            assert shot_in_name(cfg.weight) == cfg.shot, path
