"""The one place where an architecture and weights become an SCCAN.

    net = build_sccan(layers=101)                          # the paper's architecture otherwise
    net, checkpoint = sccan_from_checkpoint('best.pth')    # ours or the authors' released files

The architecture is every argument of SCCAN's constructor but the backbone file: ARCHITECTURE_KEYS,
with the paper's values as defaults (PAPER_ARCHITECTURE). Every checkpoint we write stores it
(model.checkpoint.training_checkpoint); loading builds what the checkpoint states. The authors'
checkpoints state nothing and get the paper's architecture, with the backbone depth read from
their weights.
"""
import inspect
from typing import Optional, Tuple

from model.checkpoint import (CheckpointError, detect_layers, load_strict, model_state, read_checkpoint,
                              stored_architecture)
from model.sccan import SCCAN

PAPER_ARCHITECTURE = {name: parameter.default for name, parameter in inspect.signature(SCCAN).parameters.items()
                      if name != 'backbone_weights'}
ARCHITECTURE_KEYS = tuple(PAPER_ARCHITECTURE)


def build_sccan(backbone_weights: Optional[str] = None, **architecture) -> SCCAN:
    """SCCAN with the paper's architecture except where `architecture` (ARCHITECTURE_KEYS) says.

    Args:
        backbone_weights: PSPNet-style ImageNet weights for the backbone; None: random.
        **architecture: e.g. layers=101, fts_size=32.
    """
    unknown = sorted(architecture.keys() - PAPER_ARCHITECTURE.keys())
    if unknown:
        raise ValueError(f'unknown architecture keys {unknown}; known: {", ".join(ARCHITECTURE_KEYS)}')
    return SCCAN(backbone_weights=backbone_weights, **{**PAPER_ARCHITECTURE, **architecture})


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
