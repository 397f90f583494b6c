"""What a config names besides data: the SCCAN it describes (`ready_model`: built or from a
checkpoint, checked to fit, on its device) and the checkpoint it tests or resumes. The files of a
run: util.files.run_paths.

Two ways lead to a model: without a config, model.build_sccan (a variant or architecture keys)
and model.sccan_from_checkpoint (the architecture a checkpoint states); with one, `ready_model`
(either of the two, checked against the config, with its fast paths, on a device)."""
import logging
import os
import re
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from model import (ARCHITECTURE_KEYS, MODEL_VARIANTS, SCCAN, CheckpointError, build_sccan,
                   load_backbone_weights)
from model.build import known_architecture, sccan_with_weights, weights_variant
from model.checkpoint import check_shot, metadata, model_state, read_checkpoint
from model.fast_paths import AUTO
from util.config import IMAGENET_BACKBONES, Config
from util.datasets.cross_domain import TEST_BENCHMARKS

log = logging.getLogger('sccan')

# What decides which classes are novel: a checkpoint trained with other values has seen the
# classes it would be scored on.
CLASS_KEYS = ('data_set', 'split', 'use_split_coco')


def find_checkpoint(name: str, snapshot_dir: str) -> str:
    """A resume/weight value: an existing path as given, else a file in the run's snapshot
    folder (the authors' habit: `resume: epoch_10.pth`). A folder is returned as it is:
    reading it (model.checkpoint.read_checkpoint) refuses it, naming the checkpoints it holds."""
    for candidate in (name, os.path.join(snapshot_dir, name)):
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f'checkpoint not found: {name} (looked as given and in '
                            f'{snapshot_dir})')


def architecture(cfg: Config) -> dict[str, int | float]:
    """The SCCAN architecture a config describes (model.ARCHITECTURE_KEYS)."""
    return {key: getattr(cfg, key) for key in ARCHITECTURE_KEYS}


def with_fast_paths(net: SCCAN, cfg: Config) -> SCCAN:
    """`net` with the config's exact speed-ups switched (channels_last, recompute,
    fused_attention; the last two empty: the device decides, model.fast_paths.AUTO)."""
    def switch(value):
        return AUTO if value is None else value
    return net.set_fast_paths(channels_last=cfg.channels_last, recompute=switch(cfg.recompute),
                              fused_attention=switch(cfg.fused_attention))


def _build_model(cfg, backbone_weights=None):
    """SCCAN as the config describes; backbone_weights None: random backbone (enough when a
    checkpoint provides all weights)."""
    if backbone_weights is not None and not os.path.isfile(backbone_weights):
        raise FileNotFoundError(
            f'backbone weights not found: {backbone_weights} (config key backbone_weights). '
            "Put PSPNet's resnet<L>_v2.pth in initmodel/ (see initmodel/README.md), or train "
            'from a random backbone with --opts backbone_weights None')
    net = build_sccan(**architecture(cfg))
    return with_fast_paths(net if backbone_weights is None
                           else load_backbone_weights(net, backbone_weights), cfg)


def check_fits(cfg: Config, checkpoint: Any, path: str, any_shot: bool = False, any_split: bool = False,
               resuming: bool = False) -> dict:
    """Refuse a checkpoint of another architecture than the one the config states
    (checkpoint_architecture); unless `any_shot`, one of ours trained with another number of
    shots; unless `any_split`, one of ours trained on another data set, fold or COCO fold scheme.
    `resuming`: the checkpoint is to continue a training run (whose config cannot change), not
    to be tested. Returns the architecture to build."""
    built = checkpoint_architecture(cfg, checkpoint, path)
    if not any_shot:
        check_shot(checkpoint, cfg.shot, path, RESUME_HINT if resuming else
                   'use the matching config (or --any-shot to evaluate it with another number '
                   'of shots on purpose)')
    if not any_split:
        check_classes(cfg, checkpoint, path, resuming)
    size = None if resuming else other_val_size(cfg, checkpoint)
    if size is not None:
        log.warning('%s was trained with val_size %s but %s tests at %s: its scores differ from '
                    'those at its own size (--opts val_size %s tests it as trained)', path, size,
                    cfg.source, cfg.val_size, size)
    return built


def other_val_size(cfg: Config, checkpoint: Any) -> Optional[int]:
    """The val_size a checkpoint of ours was trained with where it is not the config's, else
    None (the authors' checkpoints record none)."""
    trained = (metadata(checkpoint).get('config') or {}).get('val_size')
    return None if trained in (None, cfg.val_size) else trained


def checkpoint_architecture(cfg: Config, checkpoint: Any, path: str) -> dict:
    """The architecture to build for a checkpoint in a run of `cfg`: what the checkpoint tells
    (model.build.known_architecture: ours store all of it, the authors' weights show their
    depth), the config's values for the rest. The keys the config states (its file or --opts:
    cfg.given) are a check, not a second source: one that differs from the checkpoint is
    refused, naming every such key and the --opts that fit the checkpoint."""
    known, wanted = known_architecture(checkpoint, path), architecture(cfg)
    differ = [key for key in ARCHITECTURE_KEYS
              if key in known and key in cfg.given and known[key] != wanted[key]]
    if differ:
        size = other_val_size(cfg, checkpoint)
        raise CheckpointError(f'{path} is an SCCAN of another architecture than {cfg.source} '
                              'states: ' + ', '.join(f'{k} {known[k]} (config: {wanted[k]})' for k in differ)
                              + '; ' + fitting_opts(checkpoint, path, known, differ, cfg.model)
                              + ('' if size is None else f' val_size {size}'))
    return {**wanted, **known}


def fitting_opts(checkpoint: Any, path: str, known: Mapping[str, int | float], differ: Sequence[str],
                 model: str) -> str:
    """The way to a config that fits a checkpoint: `--opts model <variant>` when it is a named
    variant (MODEL_VARIANTS) other than the config's `model`, else the values of the keys that
    differ (the config names the variant already: other keys override it)."""
    if known.keys() == set(ARCHITECTURE_KEYS):
        variant = next((name for name, values in MODEL_VARIANTS.items() if values == known), None)
    else:         # the authors' or a plain state dict: the variant whose weights it holds
        variant = weights_variant(model_state(checkpoint, path))
    if variant is not None and variant != model:
        return f'add --opts model {variant}'
    pretrained = {layers for layers, _ in IMAGENET_BACKBONES}     # the depths of our configs
    backbone = (f'use the resnet{known["layers"]} config or ' if 'layers' in differ and
                known['layers'] in pretrained else '')
    return backbone + 'add --opts ' + ' '.join(f'{k} {known[k]}' for k in differ)


# A run continues as it began: the way on when a checkpoint to resume does not fit the config.
RESUME_HINT = 'a resumed run goes on with the config it was trained with: use that config'


def check_classes(cfg: Config, checkpoint: Any, path: str, resuming: bool = False) -> None:
    """Refuse a checkpoint of ours trained on other classes than the config's fold (CLASS_KEYS;
    the COCO fold scheme only for COCO). The authors' checkpoints record none of them: a
    warning says so, with the data set and fold their folder names suggest. A cross-domain test
    benchmark takes any checkpoint: testing a model meta-trained on other data (PASCAL) is what
    it measures."""
    if cfg.data_set in TEST_BENCHMARKS:
        return
    trained = metadata(checkpoint).get('config')
    if trained is None:
        log.warning('%s', unknown_classes(cfg, path))
        return
    differ = [key for key in CLASS_KEYS if key in trained and trained[key] != getattr(cfg, key)
              and (key != 'use_split_coco' or cfg.data_set == 'coco')]
    if differ:
        raise CheckpointError(
            f'{path} was trained with ' + ', '.join(f'{k} {trained[k]}' for k in differ) +
            f' but {cfg.source} has ' + ', '.join(f'{k} {getattr(cfg, k)}' for k in differ) +
            ': its base classes would be scored as novel ones; ' + (
                RESUME_HINT if resuming else
                'use the matching config (test_sccan.py --any-split tests it on other classes on '
                'purpose, e.g. across data sets)'))


def unknown_classes(cfg: Config, path: str) -> str:
    """The sentence for a checkpoint that records no data set or fold (the authors' format),
    with what the names of its folders suggest (their exp.zip: <data_set>/SCCAN/split<k>/...)."""
    folders = os.path.normpath(os.path.abspath(path)).split(os.sep)[:-1]
    data_set = next((name for name in reversed(folders) if name in ('pascal', 'coco')), None)
    split = next((int(m.group(1)) for name in reversed(folders)
                  for m in [re.fullmatch(r'split(\d)', name)] if m), None)
    sentence = (f'{path} records no data set or fold (the authors\' format): whether its base '
                f'classes are the novel ones of {cfg.data_set} split {cfg.split} cannot be '
                'checked; ')
    if split is None:
        return sentence + 'its folders do not name a split either'
    suggested = f'{data_set or cfg.data_set} split {split}'
    same = suggested == f'{cfg.data_set} split {cfg.split}'
    return sentence + f'its folders suggest {suggested}' + (
        '' if same else f', not the config\'s {cfg.data_set} split {cfg.split}: its scores would '
                        'count base classes as novel')


def _model_for_checkpoint(cfg, path, any_shot=False, any_split=False, contents=None):
    """The SCCAN a checkpoint describes (check_fits: the config states the rest), with its
    weights and the config's fast paths, for a run of `cfg`. `contents`: the checkpoint's object
    when read already. Returns (net, checkpoint)."""
    checkpoint = read_checkpoint(path) if contents is None else contents
    built = check_fits(cfg, checkpoint, path, any_shot, any_split)
    told = known_architecture(checkpoint, path)
    built_as = ('the architecture it states' if told.keys() == set(ARCHITECTURE_KEYS) else
                f"{cfg.source}'s architecture for what the checkpoint does not state")
    net = sccan_with_weights(checkpoint, path, built, built_as,
                             how_to_continue=lambda variant: f': add --opts model {variant}')
    return with_fast_paths(net, cfg), checkpoint


def compile_model(net: SCCAN, **options: Any) -> SCCAN:
    """`net` with its heavy parts, the backbone and the SCCA transformer, compiled in place
    (torch.compile of the modules): parameter names and the encode / segment entry points that
    the feature cache uses stay as they are. `options`: torch.compile's (backend, fullgraph;
    none: its defaults, what `compile: True` runs). Returns net."""
    net.backbone.compile(**options)
    net.transformer.compile(**options)
    return net


def ready_model(cfg: Config, device: Union[str, torch.device], checkpoint: Optional[str] = None,
                any_shot: bool = False, any_split: bool = False,
                contents: Optional[dict] = None) -> SCCAN:
    """THE way to the network a config describes, ready to run.

    Args:
        cfg: the config: architecture, fast paths (channels_last, recompute, fused_attention),
            compile, backbone_weights.
        device: torch.device it runs on.
        checkpoint: path of a checkpoint: built as it states (the config's architecture for what
            it does not), with its weights, checked to fit the config (check_fits with any_shot,
            any_split); None: built as the config says, the backbone from cfg.backbone_weights
            (random without them).
        contents: the checkpoint's object when read already (e.g. the one a run resumes).

    Returns:
        SCCAN on `device`, its heavy parts compiled when cfg.compile (compile_model).
    """
    if checkpoint is None:
        net = _build_model(cfg, cfg.backbone_weights)
    else:
        net, _ = _model_for_checkpoint(cfg, checkpoint, any_shot, any_split, contents)
    net = net.to(device)
    return compile_model(net) if cfg.compile else net
