"""SCCAN: Self-Calibrated Cross Attention Network for few-shot segmentation (ICCV 2023).

This package is the model alone: it imports nothing else of the project. The predictor for
whole images of any size is util.prediction.predictor.FewShotSegmenter.
"""
from model.backbone import BackboneFeatures
from model.build import (ARCHITECTURE_KEYS, MODEL_VARIANTS, PAPER_ARCHITECTURE, build_sccan,
                         sccan_from_checkpoint)
from model.checkpoint import CheckpointError, load_backbone_weights, load_weights, read_checkpoint
from model.sccan import SCCAN

__all__ = ['SCCAN', 'build_sccan', 'sccan_from_checkpoint', 'load_weights', 'load_backbone_weights',
           'read_checkpoint', 'CheckpointError', 'BackboneFeatures', 'ARCHITECTURE_KEYS',
           'PAPER_ARCHITECTURE', 'MODEL_VARIANTS']
