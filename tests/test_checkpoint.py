"""The checkpoint format (model/checkpoint.py) and the one builder (model/build.py): clear
refusals, and every architecture key through a checkpoint and back."""
import inspect
import logging
import os

import pytest
import torch

from model import (ARCHITECTURE_KEYS, MODEL_VARIANTS, PAPER_ARCHITECTURE, SCCAN, CheckpointError, build_sccan,
                   sccan_from_checkpoint)
from model.build import architecture_of
from model.checkpoint import detect_layers, read_checkpoint, weights_checkpoint
from util.config import REPO_ROOT, SCHEMA, default_config, load_config
from util.config import main as config_main
from util.experiment import architecture, check_fits, find_checkpoint, ready_model
from util.files.writer import save_checkpoint
from util.training.checkpoints import training_checkpoint

from helpers import assert_one_error, run_cli
from tools.dev.random_episodes import random_episode as episode

# A value for every architecture key that differs from the paper's (and still builds, small).
NOT_THE_PAPERS = dict(layers=14, backbone_width=4, fts_size=16, window_size=4, depth=2, num_heads=2,
                      mlp_ratio=2.0, reduce_dim=32, zoom_factor=4)


def test_the_architecture_is_the_constructor_and_the_config_knows_it():
    assert list(ARCHITECTURE_KEYS) == list(inspect.signature(SCCAN).parameters)
    assert set(NOT_THE_PAPERS) == set(ARCHITECTURE_KEYS)
    assert PAPER_ARCHITECTURE == dict(layers=50, backbone_width=64, fts_size=64, window_size=8, depth=8,
                                      num_heads=8, mlp_ratio=1.0, reduce_dim=256, zoom_factor=8)
    for key in ARCHITECTURE_KEYS:       # each one settable from a config, with the paper's default
        assert key in SCHEMA and SCHEMA[key].default == PAPER_ARCHITECTURE[key], key
    assert SCHEMA['model'].choices == tuple(MODEL_VARIANTS) and SCHEMA['model'].default == 'paper'
    for name, variant in MODEL_VARIANTS.items():     # each variant a full architecture the config accepts
        assert set(variant) == set(ARCHITECTURE_KEYS), name
        assert architecture(default_config().replace(**variant)) == variant, name


def test_every_architecture_key_round_trips_through_a_checkpoint(tmp_path):
    cfg = default_config().replace(**NOT_THE_PAPERS)
    net = build_sccan(**architecture(cfg))
    optimizers = [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1) for _ in range(2)]
    path = str(tmp_path / 'ours.pth')
    save_checkpoint(training_checkpoint(net, 3, *optimizers, shot=1, config=cfg.to_dict()), path)
    loaded, checkpoint = sccan_from_checkpoint(path)
    assert loaded.architecture == NOT_THE_PAPERS == checkpoint['architecture']
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    check_fits(cfg, checkpoint, path)            # the config it was made with fits
    with pytest.raises(CheckpointError, match=r'window_size 4 \(config: 8\)'):
        check_fits(cfg.replace(window_size=8), checkpoint, path)


def test_the_authors_checkpoints_get_the_papers_architecture(tmp_path):
    net = SCCAN(layers=50)
    path = str(tmp_path / 'authors.pth')
    # Their format: no architecture, DDP prefixes, optimiser states beside the weights.
    torch.save({'epoch': 42.5, 'state_dict': {'module.' + k: v for k, v in net.state_dict().items()},
                'optimizer': {}, 'optimizer_swin': {}}, path)
    loaded, _ = sccan_from_checkpoint(path)
    assert loaded.architecture == PAPER_ARCHITECTURE
    assert architecture_of({'state_dict': fake_state_dict(23, 'module.')})['layers'] == 101


# ---- named variants ------------------------------------------------------------------------------
R101_CONFIG = os.path.join(REPO_ROOT, 'config', 'pascal', 'pascal_split0_resnet101.yaml')
TINY = MODEL_VARIANTS['tiny']


def test_the_tiny_variant_writes_a_small_checkpoint_that_rebuilds_as_tiny(tmp_path):
    net = build_sccan('tiny').eval()
    assert net.architecture == TINY and TINY['layers'] == 14
    path = str(tmp_path / 'tiny.pth')
    save_checkpoint(weights_checkpoint(net, shot=1), path)
    assert os.path.getsize(path) < 1_000_000          # the paper's: 140 MB
    loaded, checkpoint = sccan_from_checkpoint(path)
    assert loaded.architecture == TINY == checkpoint['architecture']
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    query, support, masks, _ = episode(b=1, size=57)
    with torch.no_grad():
        assert torch.equal(loaded(query, support, masks), net(query, support, masks))


def test_build_sccan_takes_a_variant_and_overrides():
    assert build_sccan('tiny', depth=3).architecture == {**TINY, 'depth': 3}
    with pytest.raises(ValueError, match="unknown model variant 'tinny'; known: paper, tiny"):
        build_sccan('tinny')


def test_model_in_the_opts_stands_for_the_variants_architecture_keys_where_it_stands():
    assert architecture(load_config(R101_CONFIG)) == {**PAPER_ARCHITECTURE, 'layers': 101}
    assert architecture(load_config(R101_CONFIG, ['model', 'tiny'])) == TINY     # over the file's layers
    assert architecture(load_config(R101_CONFIG, ['model', 'tiny', 'depth', '3'])) == {**TINY, 'depth': 3}
    assert architecture(load_config(R101_CONFIG, ['depth', '3', 'model', 'tiny'])) == TINY
    assert architecture(load_config(R101_CONFIG, ['depth', '3', 'layers', '50', 'model', 'tiny'])) == TINY
    cfg = load_config(R101_CONFIG, ['model', 'tiny', 'layers', '50'])
    assert cfg.model == 'tiny' and ready_model(cfg, 'cpu').architecture == {**TINY, 'layers': 50}


def test_model_in_a_file_sets_the_keys_above_it_and_those_below_override(tmp_path):
    path = tmp_path / 'tiny.yaml'
    path.write_text('Method:\n  layers: 101\n  model: tiny\n  depth: 3\nTrain:\n  fts_size: 32\n')
    assert architecture(load_config(str(path))) == {**TINY, 'depth': 3, 'fts_size': 32}
    assert architecture(load_config(str(path), ['model', 'paper'])) == PAPER_ARCHITECTURE


def test_an_unknown_variant_is_one_error_line_naming_the_closest(capsys):
    status, _, err = run_cli(config_main, [R101_CONFIG, 'model', 'tinny'], capsys)
    assert_one_error(status, err, "--opts: model must be one of ['paper', 'tiny'], got 'tinny'; "
                                  "did you mean 'tiny'?")


def test_a_layers_request_that_contradicts_the_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / 'tiny.pth')
    save_checkpoint(weights_checkpoint(build_sccan('tiny')), path)
    with pytest.raises(CheckpointError, match='holds a ResNet-14 SCCAN but layers 101 was asked for'):
        sccan_from_checkpoint(path, layers=101)


def test_checkpoints_of_another_backbone_or_shot_are_refused():
    cfg = default_config().replace(layers=50)      # as a config file states it
    authors = {'state_dict': fake_state_dict(23)}
    with pytest.raises(CheckpointError, match=r'layers 101 \(config: 50\); use the resnet101 config'):
        check_fits(cfg, authors, 'authors.pth')
    ours = {'state_dict': {}, 'architecture': dict(PAPER_ARCHITECTURE), 'shot': 5}
    with pytest.raises(CheckpointError, match='trained with shot 5 but the config has shot 1'):
        check_fits(cfg, ours, 'ours.pth')
    check_fits(cfg, ours, 'ours.pth', any_shot=True)


def test_a_model_from_a_checkpoint_has_the_configs_fast_paths(tmp_path):
    path = str(tmp_path / 'tiny.pth')
    save_checkpoint(weights_checkpoint(build_sccan('tiny'), shot=1), path)
    cfg = default_config().replace(model='tiny', channels_last=False, fused_attention=True)
    net = ready_model(cfg, 'cpu', path)
    assert net.fast_paths == {'channels_last': False, 'recompute': 'auto', 'fused_attention': True}


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'c.pth'
    save_checkpoint({'state_dict': {'w': torch.randn(1000)}}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupted'):
        read_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        read_checkpoint(str(tmp_path / 'none.pth'))


def fake_state_dict(layer3_blocks, prefix=''):
    return {f'{prefix}backbone.body.layer3.{i}.conv1.weight': torch.zeros(1)
            for i in range(layer3_blocks)}


def test_backbone_depth_is_read_from_layer3_blocks():
    assert detect_layers(fake_state_dict(6)) == 50
    assert detect_layers(fake_state_dict(23, 'module.')) == 101
    assert detect_layers({'x': torch.zeros(1)}) is None


def test_checkpoint_names_are_paths_or_snapshot_files(tmp_path):
    (tmp_path / 'train_latest.pth').write_bytes(b'')
    assert find_checkpoint('train_latest.pth', str(tmp_path)) == str(tmp_path / 'train_latest.pth')
    with pytest.raises(FileNotFoundError, match='looked as given and in'):
        find_checkpoint('epoch_9.pth', str(tmp_path))


def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path):
    net = build_sccan('tiny')
    state = net.state_dict()
    state['cls_meta.3.bias'][0] = float('nan')
    state['res1_meta.0.weight'][0] = float('inf')
    path = str(tmp_path / 'nan.pth')
    save_checkpoint({'state_dict': state, 'architecture': dict(net.architecture)}, path)
    with pytest.raises(CheckpointError, match=r'nan.pth holds NaN or infinite values in 2 of its tensors '
                                              r'\(cls_meta.3.bias, res1_meta.0.weight\)'):
        sccan_from_checkpoint(path)


def ours(**config):
    return {'state_dict': {}, 'architecture': dict(PAPER_ARCHITECTURE), 'shot': 1,
            'config': {'data_set': 'pascal', 'split': 0, 'use_split_coco': True, **config}}


def test_checkpoints_trained_on_other_classes_are_refused_unless_asked():
    cfg = default_config()
    with pytest.raises(CheckpointError, match=r'ours.pth was trained with split 2 but .* has '
                                              r'split 0: its base classes would be scored'):
        check_fits(cfg, ours(split=2), 'ours.pth')
    check_fits(cfg, ours(split=2), 'ours.pth', any_split=True)
    check_fits(cfg, ours(use_split_coco=False), 'ours.pth')      # no COCO fold scheme in PASCAL
    coco = cfg.replace(data_set='coco')
    with pytest.raises(CheckpointError, match=r'data_set pascal, use_split_coco False but .* has '
                                              r'data_set coco, use_split_coco True'):
        check_fits(coco, ours(use_split_coco=False), 'ours.pth')
    check_fits(cfg, {'state_dict': fake_state_dict(6)}, 'authors.pth')   # theirs record none


# ---- the architecture comes from the checkpoint; the config's keys are a check ---------------------
def tiny_config(tmp_path, method):
    """A config file whose Method section is `method` (the keys it states)."""
    path = tmp_path / 'c.yaml'
    path.write_text('Method:\n' + ''.join(f'  {line}\n' for line in method))
    return str(path)


def saved(tmp_path, net, name='ckpt.pth', **entries):
    path = str(tmp_path / name)
    save_checkpoint({'state_dict': net.state_dict(), **entries}, path)
    return path


def test_keys_a_config_does_not_state_come_from_the_checkpoint(tmp_path):
    """As the cross-domain configs, which state only `layers`: any checkpoint of that depth is
    tested as it was built (today: refused over fts_size, window_size, ...)."""
    path = saved(tmp_path, build_sccan('tiny'), architecture=dict(TINY))
    cfg = load_config(tiny_config(tmp_path, ['layers: 14']))
    net = ready_model(cfg, 'cpu', path)
    assert net.architecture == TINY
    assert architecture(default_config()) == PAPER_ARCHITECTURE and not default_config().given


def fixed_by(hint, config, path, opts=()):
    """The architecture ready_model builds with the --opts the hint gives added."""
    opts = [*opts, *hint.split('add --opts ')[1].split()]
    return ready_model(load_config(config, opts), 'cpu', path).architecture


def test_a_stated_key_that_differs_is_refused_naming_each_with_opts_that_fit(tmp_path):
    config = os.path.join(REPO_ROOT, 'config', 'synthetic', 'synthetic_split0_resnet50.yaml')
    tiny = saved(tmp_path, build_sccan('tiny'), 'tiny.pth', architecture=dict(TINY))
    with pytest.raises(CheckpointError) as refused:
        ready_model(load_config(config), 'cpu', tiny)
    message = str(refused.value)
    assert message == (f'{tiny} is an SCCAN of another architecture than {config} states: layers 14 '
                       '(config: 50), fts_size 16 (config: 24), window_size 4 (config: 6), '
                       'num_heads 2 (config: 4), reduce_dim 16 (config: 128); add --opts model tiny')
    assert fixed_by(message, config, tiny) == TINY
    other = {**TINY, 'depth': 3, 'reduce_dim': 32}          # no named variant
    path = saved(tmp_path, build_sccan(**other), 'other.pth', architecture=other)
    with pytest.raises(CheckpointError, match=r'; add --opts depth 3 reduce_dim 32$') as refused:
        ready_model(load_config(config, ['model', 'tiny']), 'cpu', path)
    assert fixed_by(str(refused.value), config, path, ['model', 'tiny']) == other
    overridden = tiny_config(tmp_path, ['model: tiny', 'window_size: 2'])    # names the variant
    with pytest.raises(CheckpointError, match=r'\(config: 2\); add --opts window_size 4$') as refused:
        ready_model(load_config(overridden), 'cpu', tiny)
    assert fixed_by(str(refused.value), overridden, tiny) == TINY


def bare_tiny(tmp_path, form):
    """(net, path) of a tiny SCCAN saved without its architecture: as a plain state dict, in the
    authors' format, or in theirs with DDP's 'module.' prefixes."""
    net = build_sccan('tiny').eval()
    state = {('module.' if form == 'module' else '') + k: v for k, v in net.state_dict().items()}
    path = str(tmp_path / 'bare.pth')
    save_checkpoint(state if form == 'plain' else {'epoch': 3, 'state_dict': state}, path)
    return net, path


@pytest.mark.parametrize('form', ['plain', 'state_dict', 'module'])
def test_a_state_dict_without_architecture_follows_the_config_or_its_weights(tmp_path, form):
    """Built as the config's model (today always as the paper's); without a config
    (predict_sccan.py, the Python API, the app), as the variant whose weights it holds."""
    net, path = bare_tiny(tmp_path, form)
    built = ready_model(default_config().replace(model='tiny'), 'cpu', path)
    assert built.architecture == TINY
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), net.state_dict().values()))
    assert sccan_from_checkpoint(path)[0].architecture == TINY


def test_a_state_dict_without_architecture_and_another_config_gets_opts_that_fit(tmp_path):
    _, path = bare_tiny(tmp_path, 'module')
    with pytest.raises(CheckpointError,
                       match=r'layers 14 \(config: 101\); add --opts model tiny$') as refused:
        ready_model(load_config(R101_CONFIG), 'cpu', path)
    assert fixed_by(str(refused.value), R101_CONFIG, path) == TINY
    with pytest.raises(CheckpointError, match=r"(?s)built as ResNet-14 SCCAN, <defaults>'s "
                                              r"architecture .* its weights are those of the "
                                              r"variant 'tiny': add --opts model tiny$"):
        ready_model(default_config(), 'cpu', path)      # states no key: the paper's but its depth


def test_model_tiny_needs_no_resnet50_weights():
    """config/folder/folder_resnet50.yaml names initmodel/resnet50_v2.pth, which no tiny backbone
    can load: `model tiny` leaves the backbone random, unless backbone_weights comes after it."""
    folder = os.path.join(REPO_ROOT, 'config', 'folder', 'folder_resnet50.yaml')
    assert load_config(folder).backbone_weights == os.path.join(REPO_ROOT, 'initmodel', 'resnet50_v2.pth')
    cfg = load_config(folder, ['model', 'tiny'])
    assert cfg.backbone_weights is None and ready_model(cfg, 'cpu').architecture == TINY
    assert load_config(folder, ['model', 'tiny', 'backbone_weights', 'mine.pth']).backbone_weights == \
        os.path.abspath('mine.pth')
    assert load_config(folder, ['model', 'paper']).backbone_weights == load_config(folder).backbone_weights


def test_a_checkpoint_of_another_val_size_is_named_in_the_hint_and_warned_of(tmp_path, caplog):
    """The shipped model (val_size 161) given with the synthetic config (73): the hint's --opts
    test it at its own size; the architecture alone tests it at the config's, with a warning."""
    config = os.path.join(REPO_ROOT, 'config', 'synthetic', 'synthetic_split0_resnet50.yaml')
    trained = load_config(config, ['model', 'tiny', 'val_size', '161']).to_dict()
    tiny = saved(tmp_path, build_sccan('tiny'), 'tiny.pth', architecture=dict(TINY), config=trained)
    with pytest.raises(CheckpointError, match=r'; add --opts model tiny val_size 161$') as refused:
        ready_model(load_config(config), 'cpu', tiny)
    with caplog.at_level(logging.WARNING, logger='sccan'):
        fixed_by(str(refused.value), config, tiny)
        assert 'val_size' not in caplog.text
        ready_model(load_config(config, ['model', 'tiny']), 'cpu', tiny)
    assert (f'{tiny} was trained with val_size 161 but {config} tests at 73: its '
            'scores differ from those at its own size (--opts val_size 161 tests it as trained)'
            ) in caplog.text
