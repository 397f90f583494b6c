"""Config files and the schema: the 32 experiment configs, helpful errors, --opts."""
import glob
import os
import re

import pytest

from util.config import REPO_ROOT, ConfigError, default_config, load_config, parse_opts

CONFIGS = sorted(p for data_set in ('pascal', 'coco')
                 for p in glob.glob(os.path.join(REPO_ROOT, 'config', data_set, '*_split*_resnet*.yaml')))


def write(tmp_path, text, name='c.yaml'):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_all_32_experiment_configs_exist():
    names = {os.path.relpath(p, os.path.join(REPO_ROOT, 'config')) for p in CONFIGS}
    expected = {f'{d}/{d}_split{s}_resnet{L}{k}.yaml' for d in ('pascal', 'coco')
                for s in range(4) for L in (50, 101) for k in ('', '_5s')}
    assert names == expected


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_experiment_config_loads_with_the_authors_values(path):
    cfg = load_config(path)
    data_set, split, layers, five = re.match(
        r'(pascal|coco)_split(\d)_resnet(\d+)(_5s)?\.yaml', os.path.basename(path)).groups()
    assert (cfg.data_set, cfg.split, cfg.layers) == (data_set, int(split), int(layers))
    assert cfg.shot == (5 if five else 1)
    pascal = data_set == 'pascal'
    assert (cfg.epochs, cfg.batch_size, cfg.save_freq) == ((200, 8, 10) if pascal else (50, 2, 5))
    assert (cfg.scale_min, cfg.scale_max) == ((0.9, 1.1) if pascal else (0.8, 1.25))
    assert cfg.use_split_coco is (not pascal)
    assert cfg.test_num == (1000 if pascal else 4000)
    assert (cfg.base_lr, cfg.transformer_lr, cfg.power, cfg.stop_interval) == (0.005, 6e-5, 0.9, 75)
    assert (cfg.train_h, cfg.val_size, cfg.manual_seed, cfg.batch_size_val) == (473, 473, 321, None)
    assert (cfg.fts_size, cfg.window_size, cfg.depth, cfg.reduce_dim) == (64, 8, 8, 256)
    assert cfg.backbone_weights == os.path.join(REPO_ROOT, 'initmodel', f'resnet{layers}_v2.pth')
    assert cfg.exp_dir == os.path.join(REPO_ROOT, 'exp')
    assert (cfg.amp, cfg.on_nonfinite, cfg.resume) == ('none', 'stop', None)
    assert cfg.weight.endswith('.pth')


def test_unknown_key_names_the_closest(tmp_path):
    path = write(tmp_path, 'Train:\n  base_lrr: 0.01\n')
    with pytest.raises(ConfigError, match=r"unknown key 'base_lrr' in section Train; did you "
                                          r"mean 'base_lr'"):
        load_config(path)


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown section 'Trian'.*'Train'"):
        load_config(write(tmp_path, 'Trian:\n  base_lr: 0.01\n'))


@pytest.mark.parametrize('line, message', [
    ('epochs: ten', r"epochs expects an integer, got str 'ten'"),
    ('epochs: 10.5', r'epochs expects an integer, got float 10.5'),
    ('evaluate: 1', r'evaluate expects true/false, got int 1'),
    ('base_lr: fast', r"base_lr expects a number, got str 'fast'"),
    ('amp: fp8', r"amp must be one of \['none', 'bf16', 'fp16'\], got 'fp8'"),
    ('train_h: 474', r'train_h expects a positive size with \(size - 1\) % 8 == 0'),
    ('epochs:', r'epochs needs a value'),
    ('scale_min: 2.0', r'scale_min \(2.0\) > scale_max \(1.1\)'),
])
def test_bad_value_is_refused_naming_file_key_and_expectation(tmp_path, line, message):
    path = write(tmp_path, f'Train:\n  {line}\n')
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert path in str(e.value)


def test_ints_are_accepted_for_floats_and_empty_values_for_optional_keys(tmp_path):
    cfg = load_config(write(tmp_path, 'Train:\n  base_lr: 1\n  resume:\n'))
    assert cfg.base_lr == 1.0 and isinstance(cfg.base_lr, float) and cfg.resume is None


def test_defaults_fill_missing_keys_and_test_num_follows_the_dataset(tmp_path):
    cfg = load_config(write(tmp_path, "Train:\n  data_set: 'coco'\n"))
    assert cfg.test_num == 4000 and cfg.depth == 8 and cfg.layers == 50
    assert default_config().test_num == 1000


def test_a_config_cut_short_says_what_took_its_defaults(tmp_path, capsys):
    """Half of pascal_split0_resnet50.yaml (cut inside Train, before test_num): loaded, but the
    sections without a key and the missing line break are said, and `python -m util.config`
    marks every value that is a default."""
    with open(os.path.join(REPO_ROOT, 'config', 'pascal', 'pascal_split0_resnet50.yaml')) as f:
        text = f.read()
    half = write(tmp_path, text[:text.index('  test_num')] + '  max_iters: 1')
    cfg = load_config(half)
    assert cfg.test_num == 1000 and 'max_iters' in cfg.given and 'test_num' not in cfg.given
    assert cfg.notes == (
        f'{half} does not end with a line break: cut short? The keys it lacks take their defaults',
        f'{half} gives no key of section Method (nor do the overrides): every one of them takes '
        f'its default; `python -m util.config {half}` lists the values, defaults marked')
    assert load_config(half, ['layers', '50']).notes[1:] == ()       # Method given by --opts
    assert load_config(CONFIGS[0]).notes == ()
    lines = str(cfg).splitlines()
    assert 'max_iters: 1' in lines and 'test_num: 1000    # default' in lines


def test_duplicate_key_across_sections_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'layers' appears twice"):
        load_config(write(tmp_path, 'Train:\n  layers: 50\nMethod:\n  layers: 101\n'))


def test_authors_leftover_keys_are_accepted_unless_unsupported(tmp_path):
    cfg = load_config(write(tmp_path, 'Method:\n  vgg: False\n  aux_weight1: 1.0\n'
                                      '  merge: final\nTrain:\n  fix_bn: True\n'))
    assert not hasattr(cfg, 'aux_weight1')
    with pytest.raises(ConfigError, match="vgg: True is not supported"):
        load_config(write(tmp_path, 'Method:\n  vgg: True\n', 'vgg.yaml'))


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match='config file not found: nope.yaml'):
        load_config('nope.yaml')
    typo = os.path.join(REPO_ROOT, 'config', 'pascal', 'pascal_split0_resnet50.yml')
    with pytest.raises(FileNotFoundError) as missing:
        load_config(typo)
    assert str(missing.value) == (f'config file not found: {typo}; did you mean '
                                  f'{typo[:-len(".yml")]}.yaml?')


def test_messages_say_where_a_value_was_given():
    path = os.path.join(REPO_ROOT, 'config', 'pascal', 'pascal_split0_resnet50.yaml')
    cfg = load_config(path, ['data_root', 'elsewhere', 'model', 'tiny'])
    assert cfg.where('data_root') == '--opts data_root' and cfg.where('depth') == '--opts depth'
    assert cfg.where('split') == f'config key split in {path}'
    assert cfg.replace(data_root='x').where('data_root') == f'config key data_root in {path}'


def test_opts_override_with_types(tmp_path):
    cfg = load_config(CONFIGS[0], ['base_lr', '0.01', 'evaluate', 'false', 'layers', '101',
                                   'resume', 'None', 'weight', '0001', 'amp', 'bf16'])
    assert cfg.base_lr == 0.01 and cfg.evaluate is False and cfg.layers == 101
    assert cfg.resume is None and cfg.weight == '0001' and cfg.amp == 'bf16'


def test_paths_from_files_are_repo_relative_and_from_opts_cwd_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIGS[0], ['exp_dir', 'runs'])
    assert cfg.exp_dir == str(tmp_path / 'runs')
    assert cfg.data_root.startswith(os.path.dirname(REPO_ROOT))


@pytest.mark.parametrize('opts, message', [
    (['depht', '2'], r"unknown key 'depht'; did you mean 'depth'"),
    (['depth', 'two'], r"--opts: depth expects an integer, got str 'two'"),
    (['depth'], 'KEY VALUE pairs'),
    (['shot', '0'], 'shot expects a positive value, got 0'),
])
def test_bad_opts_are_refused(opts, message):
    with pytest.raises(ConfigError, match=message):
        parse_opts(opts)


def test_config_is_read_only_and_replace_checks():
    cfg = default_config()
    with pytest.raises(AttributeError, match='read-only'):
        cfg.layers = 101
    assert cfg.replace(layers=101).layers == 101 and cfg.layers == 50
    with pytest.raises(ConfigError, match='layers must be one of'):
        cfg.replace(layers=34)
    with pytest.raises(AttributeError, match="did you mean 'layers'"):
        cfg.layer


def test_floats_in_exponent_notation_from_yaml_and_opts(tmp_path):
    """YAML 1.1 reads 6e-5 (no dot) as a string; a number key takes what float() reads."""
    cfg = load_config(write(tmp_path, 'Train:\n  transformer_lr: 6e-5\n  base_lr: 5E-3\n'),
                      ['weight_decay', '1e-4'])
    assert (cfg.transformer_lr, cfg.base_lr, cfg.weight_decay) == (6e-5, 5e-3, 1e-4)
    assert parse_opts(['transformer_lr', '6e-5']) == {'transformer_lr': 6e-5}
    with pytest.raises(ConfigError, match=r"base_lr expects a finite number, got nan"):
        parse_opts(['base_lr', 'nan'])
    with pytest.raises(ConfigError, match=r"rotate_max expects a finite number, got inf"):
        load_config(write(tmp_path, 'Train:\n  rotate_max: .inf\n', 'inf.yaml'))


@pytest.mark.parametrize('text, message', [
    ('Train:\n  epochs: 3\n  base_lr: 0.1\n  epochs: 4\n', r"'epochs' appears twice \(lines 2 and 4\)"),
    ('Train:\n  epochs: 3\nMethod:\n  layers: 50\nTrain:\n  base_lr: 0.1\n',
     r"'Train' appears twice \(lines 1 and 5\)"),
])
def test_keys_or_sections_given_twice_are_refused_with_their_lines(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f'{path}: {message}'):
        load_config(path)


def test_a_config_in_another_encoding_is_named(tmp_path):
    path = tmp_path / 'utf16.yaml'
    path.write_text('Train:\n  epochs: 3\n', encoding='utf-16')
    with pytest.raises(ValueError, match=f'{path}: config file is not UTF-8 text'):
        load_config(str(path))


@pytest.mark.parametrize('opts, message', [
    (['val_size', '9'], r'val_size 9 is too small: .* feature grid 2 cells across, less than '
                        r'one SCCA window \(window_size 8\).* = 57'),
    (['train_h', '49'], r'train_h 49 is too small: .* = 57'),
    (['train_w', '17', 'window_size', '4', 'fts_size', '16'], r'train_w 17 .* = 25'),
])
def test_sizes_too_small_for_the_backbone_and_window_are_refused(opts, message):
    with pytest.raises(ConfigError, match=f'^{re.escape(CONFIGS[0])} with its --opts: ' + message):
        load_config(CONFIGS[0], opts)
    assert load_config(CONFIGS[0], ['val_size', '57']).val_size == 57


def test_max_iters_is_empty_by_default_and_positive():
    assert default_config().max_iters is None
    assert load_config(CONFIGS[0], ['max_iters', '3']).max_iters == 3
    with pytest.raises(ConfigError, match='max_iters expects a positive value'):
        load_config(CONFIGS[0], ['max_iters', '0'])


@pytest.mark.parametrize('text, opts', [('Train:\n  manual_seed: -5\n', []),
                                        ('', ['manual_seed', '-5']),
                                        ('', ['manual_seed', str(2 ** 32)])])
def test_a_seed_out_of_range_is_refused_naming_the_key(tmp_path, text, opts):
    with pytest.raises(ConfigError, match=r'manual_seed expects a seed from 0 to 2\*\*32 - 1, got'):
        load_config(write(tmp_path, text), opts)


def test_a_negative_seed_stops_training_before_the_run_folder_is_made(tmp_path, capsys):
    import train_sccan
    from helpers import assert_one_error, run_cli
    exp = tmp_path / 'exp'
    status, _, err = run_cli(train_sccan.main, ['--config', CONFIGS[0], '--opts', 'manual_seed',
                                                '-5', 'backbone_weights', 'None',
                                                'exp_dir', str(exp)], capsys)
    assert_one_error(status, err, '--opts: manual_seed expects a seed from 0 to 2**32 - 1, got -5')
    assert not exp.exists()


def test_a_key_given_twice_in_the_opts_is_refused_as_in_files():
    with pytest.raises(ConfigError, match=r"--opts: depth is given twice \(2, then '3'\); give it "
                                          'once'):
        parse_opts(['depth', '2', 'layers', '101', 'depth', '3'])


@pytest.mark.parametrize('text, opts, key', [("Train:\n  exp_dir: ''\n", [], 'exp_dir'),
                                             ('', ['exp_dir', ''], 'exp_dir'),
                                             ("Data:\n  data_root: ''\n", [], 'data_root')])
def test_an_empty_path_is_refused_not_read_as_the_repository(tmp_path, text, opts, key):
    with pytest.raises(ConfigError, match=f'{key} is an empty path; give a path'):
        load_config(write(tmp_path, text), opts)


def test_merged_opts_let_the_later_list_decide_without_a_key_given_twice():
    """Tools set keys (e.g. the demo's data) and let the user's --opts change them."""
    from util.config import merged_opts
    assert merged_opts(['data_root', 'a', 'epochs', '2'], ['epochs', '3', 'depth', '1']) == \
        ['data_root', 'a', 'epochs', '3', 'depth', '1']
    assert parse_opts(merged_opts(['epochs', '2'], ['epochs', '3'])) == {'epochs': 3}


def test_a_base_config_gives_what_the_file_does_not_state(tmp_path):
    """`_base_` (relative to the file's folder): the base's keys first, the file's over them, a
    `model` in the file replacing the base's architecture keys, bases of bases."""
    (tmp_path / 'bases').mkdir()
    write(tmp_path, 'Method:\n  model: tiny\n  depth: 3\nTrain:\n  base_lr: 0.01\n  epochs: 7\n',
          'bases/root.yaml')
    write(tmp_path, '_base_: root.yaml\nTrain:\n  epochs: 9\n', 'bases/middle.yaml')
    cfg = load_config(write(tmp_path, '_base_: bases/middle.yaml\nTrain:\n  base_lr: 0.02\n'))
    assert (cfg.depth, cfg.epochs, cfg.base_lr, cfg.model) == (3, 9, 0.02, 'tiny')
    assert {'depth', 'epochs', 'base_lr'} <= cfg.given and 'test_num' not in cfg.given
    paper = load_config(write(tmp_path, '_base_: bases/root.yaml\nMethod:\n  model: paper\n'))
    assert (paper.model, paper.depth, paper.base_lr) == ('paper', 8, 0.01)


@pytest.mark.parametrize('base, message', [
    ('c.yaml', r'c\.yaml: _base_ c\.yaml leads back to .*c\.yaml: a loop of bases'),
    ('gone.yaml', r'config file not found: .*gone\.yaml \(the _base_ of .*c\.yaml\)'),
    ('[a.yaml]', r"c\.yaml: _base_ must be the path of a config file .*got \['a\.yaml'\]")])
def test_a_base_that_cannot_be_read_is_named(tmp_path, base, message):
    with pytest.raises((ConfigError, FileNotFoundError), match=message):
        load_config(write(tmp_path, f'_base_: {base}\nTrain:\n  epochs: 1\n'))


def test_a_key_the_base_does_not_know_names_the_base(tmp_path):
    write(tmp_path, 'Train:\n  epoch: 3\n', 'base.yaml')
    with pytest.raises(ConfigError, match=r"base\.yaml: unknown key 'epoch' in section Train"):
        load_config(write(tmp_path, '_base_: base.yaml\n'))
