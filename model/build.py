"""The one place where an architecture and weights become an SCCAN.

    net = build_sccan()                                    # the paper's architecture
    net = build_sccan('tiny')                              # a named variant (MODEL_VARIANTS)
    net = build_sccan(layers=101)                          # the paper's but for the given keys
    net, checkpoint = sccan_from_checkpoint('best.pth')    # ours or the authors' released files

The architecture is every argument of SCCAN's constructor: ARCHITECTURE_KEYS, with the paper's
values as defaults (PAPER_ARCHITECTURE). A variant names one full architecture. Every checkpoint
we write stores the architecture (model.checkpoint.training_checkpoint); loading builds what the
checkpoint states. The authors' checkpoints state nothing and get the paper's architecture, with
the backbone depth read from their weights. ImageNet weights for the backbone are loaded after
building (model.checkpoint.load_backbone_weights).
"""
import inspect
from typing import Optional, Tuple

from model.checkpoint import (CheckpointError, detect_layers, load_strict, model_state, read_checkpoint,
                              stored_architecture)
from model.sccan import SCCAN

PAPER_ARCHITECTURE = {name: parameter.default for name, parameter in inspect.signature(SCCAN).parameters.items()}
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


def build_sccan(variant: str = 'paper', **architecture) -> SCCAN:
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


def architecture_of(checkpoint, path='<checkpoint>') -> dict:
    """The full architecture a checkpoint was made with: what it stores, the paper's otherwise;
    the backbone depth, when not stored, from the number of layer3 blocks of its weights."""
    architecture = {**PAPER_ARCHITECTURE, **stored_architecture(checkpoint, ARCHITECTURE_KEYS)}
    if 'layers' not in stored_architecture(checkpoint, ('layers',)):
        architecture['layers'] = detect_layers(model_state(checkpoint, path)) or PAPER_ARCHITECTURE['layers']
    return architecture


def sccan_from_checkpoint(path: str, layers: Optional[int] = None) -> Tuple[SCCAN, dict]:
    """Build the SCCAN a checkpoint describes and load its weights (strictly).

    Args:
        path: a checkpoint of ours, of the authors, or a plain state dict.
        layers: the backbone depth the caller expects; None: whatever the checkpoint holds.

    Returns:
        (net in eval mode on the CPU, the checkpoint object for its other entries).
    """
    checkpoint = read_checkpoint(path)
    architecture = architecture_of(checkpoint, path)
    if layers is not None and layers != architecture['layers']:
        raise CheckpointError(f"{path} holds a ResNet-{architecture['layers']} SCCAN but layers {layers} "
                              f"was asked for; leave layers out or give {architecture['layers']}")
    net = build_sccan(**architecture)
    stored = stored_architecture(checkpoint, ARCHITECTURE_KEYS)
    described = (f'architecture {stored}' if len(stored) > 1 else
                 "the paper's architecture, as the checkpoint states none")
    load_strict(net, model_state(checkpoint, path), path,
                f" (built as ResNet-{architecture['layers']} SCCAN, {described})")
    return net.eval(), checkpoint
