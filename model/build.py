"""The one place where an architecture and weights become an SCCAN.

    net = build_sccan()                                    # the paper's architecture
    net = build_sccan('tiny')                              # a named variant (MODEL_VARIANTS)
    net = build_sccan(layers=101)                          # the paper's but for the given keys
    net, checkpoint = sccan_from_checkpoint('best.pth')    # ours or the authors' released files

The architecture is every argument of SCCAN's constructor: ARCHITECTURE_KEYS, with the paper's
values as defaults (PAPER_ARCHITECTURE). A variant names one full architecture. Every checkpoint
we write stores the architecture (util.training.checkpoints.training_checkpoint); loading builds
what the checkpoint states. The authors' checkpoints and plain state dicts state nothing but the backbone
depth their weights show: the rest comes from the caller (a config, util.experiment), else from
the named variant whose weights they hold, else from the paper. ImageNet weights for the backbone
are loaded after building (model.checkpoint.load_backbone_weights).
"""
import inspect
from typing import Callable, Optional, Tuple, Union

from model.checkpoint import (CheckpointError, detect_layers, load_strict, mismatches, model_state,
                              read_checkpoint, stored_architecture)
from model.sccan import SCCAN

PAPER_ARCHITECTURE = {name: parameter.default
                      for name, parameter in inspect.signature(SCCAN).parameters.items()}
ARCHITECTURE_KEYS = tuple(PAPER_ARCHITECTURE)

# Variant name → its full architecture.
MODEL_VARIANTS = {
    'paper': PAPER_ARCHITECTURE,
    # Every part of the paper's at its smallest, for tests, smoke runs and CPU demos: one bottleneck
    # per stage an eighth as wide, two SCCA blocks (one shifted) of 2 heads on a 16×16 grid of
    # 4×4 windows. Its checkpoint is under 1 MB (the paper's: 140 MB).
    'tiny': {**PAPER_ARCHITECTURE, 'layers': 14, 'backbone_width': 8, 'fts_size': 16, 'window_size': 4,
             'depth': 2, 'num_heads': 2, 'reduce_dim': 16},
}


def build_sccan(variant: str = 'paper', **architecture: Union[int, float]) -> SCCAN:
    """The SCCAN of a named variant, except where `architecture` (ARCHITECTURE_KEYS) says; its
    backbone is random.

    Args:
        variant: a key of MODEL_VARIANTS.
        **architecture: e.g. layers=101, fts_size=32.
    """
    if variant not in MODEL_VARIANTS:
        raise ValueError(f'unknown model variant {variant!r}; known: {", ".join(MODEL_VARIANTS)}')
    unknown = sorted(architecture.keys() - PAPER_ARCHITECTURE.keys())
    if unknown:
        raise ValueError(f'unknown architecture keys {unknown}; known: {", ".join(ARCHITECTURE_KEYS)}')
    return SCCAN(**{**MODEL_VARIANTS[variant], **architecture})


def known_architecture(checkpoint: object, path: str = '<checkpoint>') -> dict:
    """What a checkpoint tells of its architecture: the keys it stores (ours: all of them), else
    the backbone depth its weights show (the number of layer3 blocks); {} when neither."""
    known = stored_architecture(checkpoint, ARCHITECTURE_KEYS)
    if 'layers' not in known:
        layers = detect_layers(model_state(checkpoint, path))
        known.update({'layers': layers} if layers else {})
    return known


def architecture_of(checkpoint: object, path: str = '<checkpoint>', defaults: Optional[dict] = None) -> dict:
    """The full architecture of a checkpoint: what it tells (known_architecture), and for the
    rest `defaults` (e.g. a config's architecture), the paper's without."""
    return {**(defaults or PAPER_ARCHITECTURE), **known_architecture(checkpoint, path)}


def _variant_nets(layers: Optional[int] = None):
    """(name, SCCAN) of each named variant, with the backbone depth `layers` where given; the
    smaller variants, cheaper to build, first."""
    for name in reversed(MODEL_VARIANTS):
        yield name, build_sccan(name, **({'layers': layers} if layers else {}))


def weights_variant(state: dict, layers: Optional[int] = None) -> Optional[str]:
    """The named variant (MODEL_VARIANTS), with the backbone depth `layers` where given, whose
    parameter names and shapes the state dict holds; None when no variant's."""
    return next((name for name, net in _variant_nets(layers) if not any(mismatches(net, state))), None)


def sccan_with_weights(checkpoint: object, path: str, architecture: dict, built_as: str,
                       how_to_continue: Callable[[str], str] = lambda variant: '') -> SCCAN:
    """SCCAN(**architecture) with the checkpoint's weights, loaded strictly: CheckpointError
    otherwise, saying how it was built (`built_as`) and, when the weights are those of a named
    variant, which one, then `how_to_continue(variant)`. Returns the net in eval mode on the CPU."""
    net = build_sccan(**architecture)
    state = model_state(checkpoint, path)
    try:
        load_strict(net, state, path, f" (built as ResNet-{architecture['layers']} SCCAN, {built_as})")
    except CheckpointError as e:
        variant = weights_variant(state) if any(mismatches(net, state)) else None
        if variant is None:
            raise
        raise CheckpointError(f"{e}\n  its weights are those of the variant '{variant}'"
                              f"{how_to_continue(variant)}") from None
    return net.eval()


def sccan_from_checkpoint(path: str, layers: Optional[int] = None) -> Tuple[SCCAN, dict]:
    """Build the SCCAN a checkpoint describes and load its weights (strictly). One that states
    no architecture (the authors', a plain state dict) is built as the named variant whose
    weights it holds (the paper's for the authors'), with the depth its weights show; as the
    paper's when none fits, which the error then says.

    Args:
        path: a checkpoint of ours, of the authors, or a plain state dict.
        layers: the backbone depth the caller expects; None: whatever the checkpoint holds.

    Returns:
        (net in eval mode on the CPU, the checkpoint object for its other entries).
    """
    checkpoint = read_checkpoint(path)
    known = known_architecture(checkpoint, path)
    depth = known.get('layers', PAPER_ARCHITECTURE['layers'])
    if layers is not None and layers != depth:
        raise CheckpointError(f"{path} holds a ResNet-{depth} SCCAN but layers {layers} "
                              "was asked for; leave layers out to build what it holds")
    if len(stored_architecture(checkpoint, ARCHITECTURE_KEYS)) > 1:
        return sccan_with_weights(checkpoint, path, architecture_of(checkpoint, path),
                                  f'architecture {known}'), checkpoint
    state = model_state(checkpoint, path)
    for name, net in _variant_nets(depth):
        if not any(mismatches(net, state)):
            load_strict(net, state, path)           # its values: finite
            return net.eval(), checkpoint
    return sccan_with_weights(checkpoint, path, architecture_of(checkpoint, path),
                              "the paper's architecture, as the checkpoint states none"), checkpoint
