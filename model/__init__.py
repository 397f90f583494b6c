"""SCCAN: Self-Calibrated Cross Attention Network for few-shot segmentation (ICCV 2023)."""
from model.backbone import BackboneFeatures
from model.checkpoint import CheckpointError, load_weights, model_state, read_checkpoint
from model.sccan import SCCAN
from model.segmenter import FewShotSegmenter

__all__ = ['SCCAN', 'FewShotSegmenter', 'BackboneFeatures', 'load_weights', 'read_checkpoint', 'model_state', 'CheckpointError']
