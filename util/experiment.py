"""What a config names besides data: the SCCAN it describes and the folders its run writes."""
import os

from model import SCCAN


def run_paths(cfg):
    """The authors' layout: <exp_dir>/<data_set>/SCCAN/split<k>/resnet<L>/{snapshot,result};
    1- and 5-shot runs share it, their files are told apart by the 'train'/'train5' prefix."""
    run = os.path.join(cfg.exp_dir, cfg.data_set, 'SCCAN', f'split{cfg.split}',
                       f'resnet{cfg.layers}')
    prefix = 'train' if cfg.shot == 1 else f'train{cfg.shot}'
    return {'snapshot': os.path.join(run, 'snapshot'), 'result': os.path.join(run, 'result'),
            'prefix': prefix}


def build_model(cfg, backbone_weights=None):
    """SCCAN as the config describes; backbone_weights None: random backbone (enough when a
    checkpoint provides all weights)."""
    if backbone_weights is not None and not os.path.isfile(backbone_weights):
        raise FileNotFoundError(
            f'backbone weights not found: {backbone_weights} (config key backbone_weights). '
            "Put PSPNet's resnet<L>_v2.pth in initmodel/ (see initmodel/README.md), or train "
            'from a random backbone with --opts backbone_weights None')
    return SCCAN(layers=cfg.layers, shot=cfg.shot, backbone_weights=backbone_weights,
                 fts_size=cfg.fts_size, window_size=cfg.window_size, depth=cfg.depth,
                 num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, reduce_dim=cfg.reduce_dim,
                 zoom_factor=cfg.zoom_factor, recompute=cfg.recompute,
                 fused_attention=cfg.fused_attention)
