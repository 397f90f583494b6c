"""Experiment configuration: YAML files in the authors' layout, checked against one schema.

A config file groups keys in sections (Data, Train, Method, Test_Finetune, Performance,
Reliability) as the SCCAN/BAM repositories do; the sections are for reading only and any known key
may sit in any known section. The loaded config is flat and read-only: `cfg.base_lr`, `cfg.layers`.
Keys left out take the defaults below (the paper's values), so a config only states what differs.
A config may also name a base config (`_base_: ../pascal/pascal_split0_resnet50.yaml`, relative to
its own folder): the base's keys apply first and the file states only what differs from it.

    cfg = load_config('config/pascal/pascal_split0_resnet50.yaml', opts=['base_lr', '0.01'])

The key `model` names an architecture (model.build.MODEL_VARIANTS: `paper`, `tiny`) and stands
for that variant's architecture keys (layers, backbone_width, fts_size, window_size, depth,
num_heads, mlp_ratio, reduce_dim, zoom_factor): they take its values where `model` stands, and an
architecture key given after it (below it in the file, after it in --opts, or in --opts after the
file) overrides that one value: `--opts model tiny depth 3` is the tiny variant with 3 SCCA blocks.
A variant whose backbone has no ImageNet weights (tiny) also empties backbone_weights: a random
backbone, unless backbone_weights is given after it.

Loading rejects unknown keys (naming the closest known one), keys given twice, and values of the
wrong type; a number key also takes what Python's float() reads (6e-5, which YAML 1.1 leaves a
string). Paths in
a config file are relative to the repository root; paths given on the command line (--opts) are
relative to the current directory. Both are stored absolute.

Keys of the authors' files that SCCAN does not use (BAM leftovers such as `aux_weight1`, `merge`,
or settings fixed here such as `fix_bn: True`) are accepted and dropped, so their files load too;
a value we cannot honour (e.g. `vgg: True`) is refused.

`python -m util.config` prints the schema as a Markdown table; `python -m util.config FILE
[KEY VALUE ...]` prints the resolved config.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
from typing import Iterable, Mapping, Sequence

import yaml

from model.backbone import BLOCKS_PER_STAGE
from model.build import MODEL_VARIANTS
from model.sccan import OUTPUT_STRIDE, input_size_rule, valid_input_size
from util.catalogue import CATALOGUE
from util.cli import run_main
from util.files.inputs import read_text

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclasses.dataclass(frozen=True)
class Key:
    section: str
    type: type                 # bool, int, float or str
    default: object
    doc: str
    choices: tuple = ()
    nullable: bool = False     # None (an empty YAML value) allowed
    path: bool = False         # relative values are resolved to absolute paths
    check: tuple = ()          # (predicate, what it expects) for values beyond the type


def _k(section, type_, default, doc, **kw):
    return Key(section, type_, default, doc, **kw)


_SIZE_CHECK = (valid_input_size, f'a positive size with {input_size_rule()}')
_POSITIVE = (lambda v: v > 0, 'a positive value')
_NON_NEGATIVE = (lambda v: v >= 0, 'a value >= 0')
# numpy's seeds and the episode seeds (util.episodes.episode_seed) take non-negative 32-bit values
_SEED = (lambda v: 0 <= v < 2 ** 32, 'a seed from 0 to 2**32 - 1')

SCHEMA = {
    # --- data ---
    'data_root': _k('Data', str, None, 'dataset root folder (VOC2012 or MSCOCO2014 layout; a '
                    "cross-domain benchmark's own folder, docs/cross_domain.md)",
                    nullable=True, path=True),
    'train_list': _k('Data', str, None, 'training image list, lines "image label" relative to '
                     'data_root (fss, folder: a class list, one class folder per line)',
                     nullable=True, path=True),
    'val_list': _k('Data', str, None, 'validation image list, same format (fss, folder: a class '
                   'list)', nullable=True, path=True),
    'list_dir': _k('Data', str, 'lists', 'cache of the episode lists built from the data',
                   path=True),
    'data_set': _k('Train', str, 'pascal', 'episode source: pascal, coco; PATNet\'s cross-domain '
                   'benchmarks fss, deepglobe, isic, lung; folder (own classes in the FSS-1000 '
                   'layout)', choices=tuple(CATALOGUE)),
    'split': _k('Train', int, 0, 'fold: its classes are novel (val), the others base (train); 4: '
                'every class is base, none novel (PATNet\'s "fold 4", training for the '
                'cross-domain tests)', choices=(0, 1, 2, 3, 4)),
    'shot': _k('Train', int, 1, 'support images per episode (K)', check=_POSITIVE),
    'use_split_coco': _k('Train', bool, True, 'COCO folds: True interleaved (SCCAN/BAM/HSNet), '
                         'False contiguous (PANet)'),
    'ann_type': _k('Test_Finetune', str, 'mask', 'support annotation: mask or bbox (weak)',
                   choices=('mask', 'bbox')),
    'query_classes': _k('Data', str, 'present', "the query's class: drawn among the classes of "
                        'the mode present in its label (present, the authors\' rule) or among '
                        'those covering >= 2,048 pixels (eligible)', choices=('present', 'eligible')),
    # --- augmentation ---
    'train_h': _k('Train', int, 473, 'training crop height', check=_SIZE_CHECK),
    'train_w': _k('Train', int, 473, 'training crop width', check=_SIZE_CHECK),
    'val_size': _k('Train', int, 473, 'validation canvas (longer side resized to it, padded)',
                   check=_SIZE_CHECK),
    'scale_min': _k('Train', float, 0.9, 'random scale, lower bound', check=_POSITIVE),
    'scale_max': _k('Train', float, 1.1, 'random scale, upper bound', check=_POSITIVE),
    'rotate_min': _k('Train', float, -10.0, 'random rotation in degrees, lower bound'),
    'rotate_max': _k('Train', float, 10.0, 'random rotation in degrees, upper bound'),
    # --- optimisation ---
    'batch_size': _k('Train', int, 8, 'training episodes per step and per process',
                     check=_POSITIVE),
    'base_lr': _k('Train', float, 0.005, 'SGD base lr (poly decay; SGD groups train at 10x)',
                  check=_NON_NEGATIVE),
    'transformer_lr': _k('Train', float, 6e-5, 'AdamW lr of the SCCA transformer (constant)',
                         check=_NON_NEGATIVE),
    'epochs': _k('Train', int, 200, 'training epochs', check=_POSITIVE),
    'max_iters': _k('Train', int, None, 'stop after this many training steps in all (a smoke '
                    'test; the lr schedule still spans all epochs); empty: all epochs',
                    nullable=True, check=_POSITIVE),
    'stop_interval': _k('Train', int, 75, 'early stop after this many epochs without a new best '
                        'val mIoU (as the authors\' loop counts: with evaluate False, after this '
                        'many epochs)', check=_POSITIVE),
    'index_split': _k('Train', int, -1, 'SGD groups (down_query, down_supp, init_merge_query, '
                      'init_merge_supp, ASPP_meta, res1_meta, res2_meta, cls_meta) with index <= '
                      'index_split keep base_lr, the rest get 10x',
                      check=(lambda v: v >= -1, '-1 or a group index >= 0')),
    'power': _k('Train', float, 0.9, 'poly decay power (0: constant lr)', check=_NON_NEGATIVE),
    'momentum': _k('Train', float, 0.9, 'SGD momentum', check=_NON_NEGATIVE),
    'weight_decay': _k('Train', float, 1e-4, 'SGD weight decay', check=_NON_NEGATIVE),
    'warmup': _k('Train', bool, False, 'linear lr warmup over the first half epoch'),
    # --- logging, saving, resuming ---
    'print_freq': _k('Train', int, 10, 'log a training line every N steps', check=_POSITIVE),
    'save_freq': _k('Train', int, 10, 'write the "latest" checkpoint every N epochs (also at '
                    'every validation)', check=_POSITIVE),
    'resume': _k('Train', str, None, 'checkpoint to continue from: a path, or a file name in the '
                 "run's snapshot folder", nullable=True),
    'exp_dir': _k('Train', str, 'exp', 'output root: <exp_dir>/<data_set>/SCCAN/split<k>/'
                  'resnet<L>/{snapshot,result}', path=True),
    # --- validation / testing ---
    'evaluate': _k('Train', bool, True, 'validate during training'),
    'SubEpoch_val': _k('Train', bool, True, 'also validate at half epoch when epochs <= 100'),
    'batch_size_val': _k('Train', int, None, 'episodes per evaluation forward, each scored '
                         'alone at its own size; empty: 8 on CUDA, 1 on the CPU',
                         nullable=True, check=_POSITIVE),
    'ori_resize': _k('Train', bool, True, 'score at the original label resolution (else at '
                     'val_size)'),
    'test_num': _k('Train', int, None, 'episodes per evaluation; empty: 1,000 for PASCAL, 4,000 '
                   'for COCO (the authors\' protocol), 600 for deepglobe, isic, lung and 2,400 '
                   'for fss (PATNet\'s), 1,000 for folder', nullable=True, check=_POSITIVE),
    'workers': _k('Train', int, 8, 'data loading processes per training process (at most '
                  'the CPUs available: fewer, with a note in the log, on a smaller machine)',
                  check=_NON_NEGATIVE),
    'manual_seed': _k('Train', int, 321, 'seed of training (+ epoch each epoch) and of '
                      'validation episodes', check=_SEED),
    'seed_deterministic': _k('Train', bool, False, 'bit-identical GPU runs: deterministic '
                             'kernels, cuDNN and cuBLAS settings, resizes by matrix products '
                             '(util/determinism.py; slower on GPU)'),
    'weight': _k('Test_Finetune', str, None, 'checkpoint for test_sccan.py: a path, or a file '
                 "name in the run's snapshot folder", nullable=True),
    # --- model ---
    'model': _k('Method', str, 'paper', "a named architecture: sets the architecture keys (layers "
                'to zoom_factor) to its values where it stands; those given after it override '
                'them (paper: the paper\'s; tiny: a small one for tests and smoke runs, whose '
                'backbone has no ImageNet weights: it also empties backbone_weights)',
                choices=tuple(MODEL_VARIANTS)),
    'layers': _k('Method', int, 50, 'ResNet depth of the frozen backbone (14: one block per '
                 'stage)', choices=tuple(sorted(BLOCKS_PER_STAGE))),
    'backbone_width': _k('Method', int, 64, 'base width of the backbone (stem and first stage)',
                         check=_POSITIVE),
    'backbone_weights': _k('Method', str, None, 'ImageNet weights of the backbone '
                           '(initmodel/resnet<L>_v2.pth); empty: random backbone', nullable=True,
                           path=True),
    'zoom_factor': _k('Method', int, 8, 'logits size: (H - 1) / 8 * zoom + 1',
                      choices=(1, 2, 4, 8)),
    'fts_size': _k('Method', int, 64, 'side of the grid the SCCA blocks work on',
                   check=_POSITIVE),
    'window_size': _k('Method', int, 8, 'patch (window) side of the SCCA blocks',
                      check=_POSITIVE),
    'depth': _k('Method', int, 8, 'number of SCCA blocks', check=_POSITIVE),
    'num_heads': _k('Method', int, 8, 'attention heads per SCCA block', check=_POSITIVE),
    'mlp_ratio': _k('Method', float, 1.0, 'MLP hidden width / reduce_dim', check=_POSITIVE),
    'reduce_dim': _k('Method', int, 256, 'feature width C', check=_POSITIVE),
    # --- performance ---
    'amp': _k('Performance', str, 'none', 'mixed precision: none, bf16 or fp16 (fp16: CUDA only, '
              'with loss scaling)', choices=('none', 'bf16', 'fp16')),
    'channels_last': _k('Performance', bool, True, 'channels-last memory format (faster convolutions '
                        'on CPUs and GPUs; same results up to rounding)'),
    'compile': _k('Performance', bool, False, 'torch.compile the backbone and the SCCA '
                  'transformer (first steps are slow while it compiles)'),
    'recompute': _k('Performance', bool, None, 'training: recompute SCCA block activations '
                    'in the backward pass instead of storing them (same gradients, half the '
                    'memory, a fifth of a GPU step); empty: on the CPU only', nullable=True),
    'fused_attention': _k('Performance', bool, None, 'SCCA attention through '
                          'scaled_dot_product_attention (less memory; faster on GPUs, slower on '
                          'CPUs); empty: on CUDA, except in training with seed_deterministic (its fused '
                          'backward is not deterministic)', nullable=True),
    'tf32': _k('Performance', bool, True, 'CUDA: float32 matrix products and convolutions on '
               'TF32 tensor cores (Ampere and later), as the authors\' PyTorch 1.7 ran them; '
               'False: full float32 (no effect on the CPU)'),
    'cuda_graphs': _k('Performance', bool, True, 'evaluation on CUDA replays the network from '
                      'recorded CUDA graphs (same kernels, same logits; no effect on the CPU)'),
    'feature_cache_gb': _k('Performance', float, 0.0, 'memory for caching frozen backbone '
                           'features during evaluation (0: off)', check=_NON_NEGATIVE),
    'feature_cache_device': _k('Performance', str, 'same', 'where cached features live: same '
                               '(the compute device) or host (CPU memory)', choices=('same', 'host')),
    # --- reliability ---
    'skip_bad_files': _k('Reliability', bool, False, 'skip images or labels that cannot be read '
                         '(logged; another episode is drawn) instead of stopping'),
    'on_nonfinite': _k('Reliability', str, 'stop', 'non-finite training loss: stop (keep the last '
                       'good checkpoint) or skip the step and count it', choices=('stop', 'skip')),
}

DEFAULT_TEST_NUM = {name: d.test_episodes for name, d in CATALOGUE.items()}

SECTIONS = ('Data', 'Train', 'Method', 'Test_Finetune', 'Performance', 'Reliability')

# Keys of the authors' files that have no effect here. None: any value is accepted (BAM
# leftovers); otherwise the one value this code implements.
LEGACY_KEYS = {
    'classes': 2, 'ignore_label': 255, 'padding_label': 255, 'vgg': False, 'fix_bn': True,
    'resized_val': True, 'fix_random_seed_val': True, 'start_epoch': 0,
    'aux_weight1': None, 'aux_weight2': None, 'low_fea': None, 'kshot_trans_dim': None,
    'merge': None, 'merge_tau': None,
}
LEGACY_SECTIONS = ('Distributed',)


class Config:
    """Read-only flat view of a checked configuration; `replace` returns a checked copy.
    `given`: the keys its file, --opts or `replace` gave (a `model` gives every architecture
    key); the others hold their defaults. `notes`: what looks wrong with the file without being
    an error (a whole section left to its defaults, a file cut short), for the scripts to log.
    `from_opts`: the keys whose values the --opts gave (`where` tells messages)."""
    __slots__ = ('_values', 'source', 'given', 'notes', 'from_opts')

    def __init__(self, values: Mapping[str, bool | int | float | str | None], source: str = '<defaults>',
                 given: Iterable[str] = (), notes: Iterable[str] = (), from_opts: Iterable[str] = ()):
        object.__setattr__(self, '_values', dict(values))
        object.__setattr__(self, 'source', source)
        object.__setattr__(self, 'given', frozenset(given))
        object.__setattr__(self, 'notes', tuple(notes))
        object.__setattr__(self, 'from_opts', frozenset(from_opts))

    def __getattr__(self, name):
        values = object.__getattribute__(self, '_values')
        if name in values:
            return values[name]
        raise AttributeError(f'config has no key {name!r}{_suggest(name, values)}')

    def __setattr__(self, name, value):
        raise AttributeError('Config is read-only; use cfg.replace(key=value)')

    def replace(self, **changes: bool | int | float | str | None) -> Config:
        values, given = dict(self._values), set(self.given)
        for name, value in changes.items():
            _assign(values, given, name, _check_value(name, value, f'{self.source} (replace)'))
        return Config(_finish(values, self.source), self.source, given, self.notes,
                      self.from_opts - changes.keys())

    def where(self, key: str) -> str:
        """Where a key's value was given, for messages: 'config key data_root in <file>', or
        '--opts data_root' when the command line gave it."""
        return f'--opts {key}' if key in self.from_opts else f'config key {key} in {self.source}'

    def to_dict(self) -> dict[str, bool | int | float | str | None]:
        return dict(self._values)

    def __repr__(self):
        return f'Config({self.source})'

    def __str__(self):
        """Every key and value; those the file and the overrides did not give say so."""
        return '\n'.join(f'{k}: {v}' + ('' if k in self.given else '    # default')
                         for k, v in self._values.items())


def default_config() -> Config:
    return Config(_finish({name: key.default for name, key in SCHEMA.items()}, '<defaults>'))


def load_config(path: str, opts: Sequence[str] = ()) -> Config:
    """A checked, read-only Config.

    Args:
        path: YAML file in the authors' layout (sections Data, Train, ...).
        opts: overrides, a flat list KEY VALUE KEY VALUE ... (as after --opts).

    Returns:
        Config with every key of SCHEMA (defaults for those not given), paths absolute.

    Raises:
        ConfigError naming the file, key and what was expected; FileNotFoundError.
    """
    layers, text = _read_layers(path)
    values, given = {name: key.default for name, key in SCHEMA.items()}, set()
    for source, keys in layers:
        for name, value in keys.items():
            value = _check_value(name, value, source)
            _assign(values, given, name, _resolve_path(name, value, REPO_ROOT))
    from_opts = set()
    for name, value in parse_opts(opts).items():
        _assign(values, from_opts, name, _resolve_path(name, value, os.getcwd()))
    given |= from_opts
    completed = _finish(values, f'{path} with its --opts' if from_opts else path)
    return Config(completed, path, given, _notes(path, text, given), from_opts)


# A config may name another as its base (`_base_: ../pascal/pascal_split0_resnet50.yaml`, relative
# to its own folder, as in mmcv): it then states only what differs from that file.
BASE_KEY = '_base_'


def _read_layers(path, derived=()):
    """The keys of a config file and of its bases: ([(file, {key: value}), ...] from the
    outermost base to the file itself, the file's text). `derived`: the files based on this one
    (a loop of bases is refused)."""
    try:
        text = read_text(path, 'config file')
        raw = _parse_yaml(text, path)
    except FileNotFoundError:
        based = f' (the {BASE_KEY} of {derived[-1]})' if derived else ''
        raise FileNotFoundError(f'config file not found: {path}{based}{_suggest_file(path)}') from None
    except yaml.YAMLError as e:
        raise ConfigError(f'{path}: not valid YAML: {e}') from None
    raw = raw or {}
    base = raw.pop(BASE_KEY, None) if isinstance(raw, dict) else None
    layers = []
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f'{path}: {BASE_KEY} must be the path of a config file (relative '
                              f'to {path}\'s folder), got {base!r}')
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        if os.path.abspath(base_path) in map(os.path.abspath, (*derived, path)):
            raise ConfigError(f'{path}: {BASE_KEY} {base} leads back to {base_path}: a loop of '
                              'bases')
        layers = _read_layers(base_path, (*derived, path))[0]
    return [*layers, (path, _flatten(raw, path))], text


# The sections every config needs something of: a file without a key of one is probably cut
# short (the others may well be left to their defaults, e.g. by a test-only config).
CORE_SECTIONS = ('Data', 'Train', 'Method')


def _notes(path, text, given):
    """What looks wrong with a config file without being an error: a core section with no key
    given (in the file or the overrides), a file that does not end with a line break."""
    notes = []
    if text and not text.endswith('\n'):
        notes.append(f'{path} does not end with a line break: cut short? The keys it lacks take '
                     'their defaults')
    bare = [s for s in CORE_SECTIONS if not any(SCHEMA[k].section == s for k in given
                                                   if k in SCHEMA)]
    if bare:
        notes.append(f'{path} gives no key of section {", ".join(bare)} (nor do the overrides): '
                     'every one of them takes its default; `python -m util.config '
                     f'{path}` lists the values, defaults marked')
    return notes


# The backbones (layers, backbone_width) that have ImageNet weights: PSPNet's resnet50_v2.pth
# and resnet101_v2.pth (initmodel/README.md).
IMAGENET_BACKBONES = {(50, 64), (101, 64)}


def _assign(values, given, name, value):
    """values[name] = value, and the keys it sets added to `given`; `model` first sets its
    variant's architecture keys and, for a backbone without ImageNet weights, no
    backbone_weights (a config's resnet50_v2.pth cannot load into it)."""
    if name == 'model':
        variant = MODEL_VARIANTS[value]
        values.update(variant)
        given.update(variant)
        if (variant['layers'], variant['backbone_width']) not in IMAGENET_BACKBONES:
            values['backbone_weights'] = None
    values[name] = value
    given.add(name)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is refused (PyYAML
    silently keeps the last value)."""


def _mapping_of_unique_keys(loader, node):
    mapping = loader.construct_mapping(node)
    first_line = {}
    for key_node, _ in node.value:
        key, line = loader.construct_object(key_node), key_node.start_mark.line + 1
        if key in first_line:
            raise ConfigError(f'{loader.name}: {key!r} appears twice (lines {first_line[key]} '
                              f'and {line}); remove one')
        first_line[key] = line
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _mapping_of_unique_keys)


def _parse_yaml(text, name):
    loader = _UniqueKeyLoader(text)
    loader.name = name            # in messages, instead of '<unicode string>'
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_opts(opts: Iterable[str] | None) -> dict[str, bool | int | float | str | None]:
    """['base_lr', '0.01', 'layers', '101'] → {'base_lr': 0.01, 'layers': 101}, type-checked.
    Values are read as YAML scalars (true, null, 1e-3); `None` also means null. A key given
    twice is refused, as in a config file."""
    opts = list(opts or ())
    if len(opts) % 2:
        raise ConfigError(f'--opts needs KEY VALUE pairs, got an odd number of items: {opts}')
    parsed = {}
    for name, text in zip(opts[0::2], opts[1::2]):
        if name not in SCHEMA:
            raise ConfigError(f'--opts: unknown key {name!r}{_suggest(name, SCHEMA)}')
        if name in parsed:
            raise ConfigError(f'--opts: {name} is given twice ({parsed[name]!r}, then {text!r}); '
                              'give it once')
        parsed[name] = _check_value(name, _decode(name, text), '--opts')
    return parsed


def merged_opts(base: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """KEY VALUE lists (as after --opts) in one: `overrides` replace the values `base` gives
    for the same keys (where a tool sets keys and lets its user's --opts change them; one
    --opts list may not give a key twice)."""
    replaced = set(overrides[0::2])
    kept = [item for key, value in zip(base[0::2], base[1::2]) if key not in replaced
            for item in (key, value)]
    return kept + list(overrides)


def _decode(name, text):
    key = SCHEMA[name]
    if key.nullable and text in ('None', 'null', '~', ''):
        return None
    if key.type is str:
        return text     # a path such as 0001 or true stays a string
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _flatten(raw, path):
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: expected a mapping of sections, got {type(raw).__name__}')
    flat, origin = {}, {}
    for top, value in raw.items():
        if isinstance(value, dict) and top not in SCHEMA:
            if top not in SECTIONS + LEGACY_SECTIONS:
                raise ConfigError(f'{path}: unknown section {top!r}'
                                  f'{_suggest(top, SECTIONS)} (known: {", ".join(SECTIONS)})')
            if top in LEGACY_SECTIONS:
                continue
            items = value.items()
        else:
            items = [(top, value)]
        for name, v in items:
            if name in origin:
                raise ConfigError(f'{path}: key {name!r} appears twice ({origin[name]} and {top})')
            origin[name] = top
            if name in LEGACY_KEYS:
                _check_legacy(name, v, path)
                continue
            if name not in SCHEMA:
                raise ConfigError(f'{path}: unknown key {name!r} in section {top}'
                                  f'{_suggest(name, SCHEMA)}')
            flat[name] = v
    return flat


def _check_legacy(name, value, where):
    supported = LEGACY_KEYS[name]
    if supported is not None and value != supported:
        raise ConfigError(f'{where}: {name}: {value!r} is not supported; this implementation '
                          f'always behaves as {name}: {supported!r} (remove the key)')


def _check_value(name, value, where):
    if name not in SCHEMA:
        raise ConfigError(f'{where}: unknown key {name!r}{_suggest(name, SCHEMA)}')
    key = SCHEMA[name]
    if value is None:
        if key.nullable:
            return None
        raise ConfigError(f'{where}: {name} needs a value ({_type_name(key)})')
    if key.type is float:
        value = _as_float(value)
    if type(value) is not key.type:
        raise ConfigError(f'{where}: {name} expects {_type_name(key)}, got '
                          f'{type(value).__name__} {value!r}')
    if key.path and value == '':
        # os.path.join(root, '') is the root itself: exp_dir '' would write into the repository
        raise ConfigError(f'{where}: {name} is an empty path; give a path'
                          + (' or leave the value empty for none' if key.nullable else ''))
    if key.type is float and not math.isfinite(value):
        raise ConfigError(f'{where}: {name} expects a finite number, got {value!r}')
    if key.choices and value not in key.choices:
        closest = _suggest(value, key.choices) if key.type is str else ''
        raise ConfigError(f'{where}: {name} must be one of {list(key.choices)}, got {value!r}{closest}')
    if key.check and not key.check[0](value):
        raise ConfigError(f'{where}: {name} expects {key.check[1]}, got {value!r}')
    return value


def _as_float(value):
    """Integers and the strings Python's float() reads (YAML 1.1 reads 6e-5 as a string: its
    float rule needs a dot) as floats; anything else unchanged, for the type check to refuse."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def smallest_input_size(window_size: int) -> int:
    """The smallest train_h / train_w / val_size: the backbone (stride 8) must give a feature
    grid of at least one SCCA window, (size - 1) / 8 + 1 >= window_size."""
    return OUTPUT_STRIDE * (window_size - 1) + 1


def _finish(values, where):
    """Cross-key checks and derived defaults; returns the completed values."""
    smallest = smallest_input_size(values['window_size'])
    for name in ('train_h', 'train_w', 'val_size'):
        size = values[name]
        if size < smallest:
            raise ConfigError(
                f'{where}: {name} {size} is too small: the backbone (stride {OUTPUT_STRIDE}) '
                f'turns it into a feature grid {(size - 1) // OUTPUT_STRIDE + 1} cells across, '
                f'less than one SCCA window (window_size {values["window_size"]}), and validation '
                f'images, resized to val_size and floored to multiples of {OUTPUT_STRIDE}, '
                f'lose their short side; the smallest size is {OUTPUT_STRIDE}·(window_size - '
                f'1) + 1 = {smallest}')
    for low, high in (('scale_min', 'scale_max'), ('rotate_min', 'rotate_max')):
        if values[low] > values[high]:
            raise ConfigError(f'{where}: {low} ({values[low]}) > {high} ({values[high]})')
    if values['reduce_dim'] % values['num_heads']:
        raise ConfigError(f'{where}: reduce_dim ({values["reduce_dim"]}) must be divisible by '
                          f'num_heads ({values["num_heads"]})')
    if values['test_num'] is None:
        values = {**values, 'test_num': DEFAULT_TEST_NUM[values['data_set']]}
    return values


def _resolve_path(name, value, base):
    if SCHEMA[name].path and value is not None and not os.path.isabs(value):
        return os.path.normpath(os.path.join(base, value))
    return value


def _type_name(key):
    name = {bool: 'true/false', int: 'an integer', float: 'a number', str: 'a string'}[key.type]
    return f'{name} or empty' if key.nullable else name


def _suggest_file(path):
    """'; did you mean <the closest file name in path's folder>?' for a config file not found
    (config/pascal/pascal_split0_resnet50.yml), else ''."""
    folder = os.path.dirname(path) or '.'
    names = os.listdir(folder) if os.path.isdir(folder) else []
    close = difflib.get_close_matches(os.path.basename(path), names, n=1)
    return f'; did you mean {os.path.join(os.path.dirname(path), close[0])}?' if close else ''


def _suggest(name, known):
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ''


def schema_markdown() -> str:
    """The schema as a Markdown table (used in the README)."""
    rows = ['| key | section | type | default | meaning |', '| --- | --- | --- | --- | --- |']
    for name, key in SCHEMA.items():
        kind = '|'.join(map(str, key.choices)) if key.choices else key.type.__name__
        default = '' if key.default is None else key.default
        rows.append(f'| `{name}` | {key.section} | {kind} | {default} | {key.doc} |')
    return '\n'.join(rows)


def main(argv: Sequence[str]) -> None:
    print(load_config(argv[0], argv[1:]) if argv else schema_markdown())


if __name__ == '__main__':
    run_main(lambda: main(sys.argv[1:]))
