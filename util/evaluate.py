"""THE evaluation loop: training's validation and test_sccan.py both run `run_episodes`.

Protocol (the authors' test_sccan.py, validate): `num_episodes` episodes of one seed, episode e
querying image e % len(list); logits resized to the original label resolution (`ori_resize`: the
label placed top-left in an L×L canvas of ignore, L its longer side) or else compared at the
network input size. Episodes are dealt over processes and the pixel counts summed, so N
processes report what one would.
"""
import logging
import time

import torch
import torch.nn.functional as F

from util.distributed import all_reduce_sum
from util.episodes import EvalSampler, SeededEpisodes, batch_tensors, make_loader
from util.feature_cache import FeatureCache
from util.image_io import IGNORE_LABEL
from util.log import progress
from util.metrics import IoUMeter

log = logging.getLogger('sccan')


def make_predictor(net, cfg, precision, device):
    """predict(batch) → B×2×H×W logits, the network run on the batch. With
    cfg.feature_cache_gb > 0 the backbone features of every image are kept for the predictor's
    lifetime (util.feature_cache): make one predictor per run and pass it to every
    run_episodes, so that each image goes through the backbone once."""
    if cfg.feature_cache_gb > 0:
        cache = FeatureCache(cfg.feature_cache_gb, cfg.feature_cache_device)
        return cached_predictor(net, cache, precision, device, transform_key=('val', cfg.val_size))
    return forward_predictor(net, precision, device)


def forward_predictor(net, precision, device):
    """predict(batch) → B×2×H×W logits with one plain forward pass."""
    def predict(batch):
        with precision.autocast():
            return net(*batch_tensors(batch, device))
    return predict


def cached_predictor(net, cache, precision, device, transform_key):
    """predict(batch) → logits, the backbone features of the batch's images looked up in
    `cache` by (image path, transform_key) and computed only for the images not seen before."""
    def predict(batch):
        query, support, support_masks = batch_tensors(batch, device)
        b, k = support_masks.shape[:2]
        query_keys = [(path, transform_key) for path in batch['query_path']]
        # support_paths collates shot-major (K lists of B); the features go episode-major.
        support_keys = [(batch['support_paths'][j][i], transform_key)
                        for i in range(b) for j in range(k)]
        with precision.autocast():
            query_feats = cache.encode(net, query, query_keys)
            support_feats = cache.encode(net, support.flatten(0, 1), support_keys)
            return net.segment(query_feats, support_feats, support_masks,
                               net.output_size(query.shape[-2:]))
    predict.cache = cache
    return predict


def original_targets(batch, device):
    """The ori_resize targets of a batch: per episode an L×L label (L = longer side of the
    original label), the label top-left, the rest ignore."""
    labels = batch['query_mask_original']
    sizes = batch['original_size']
    targets = []
    for label, (h, w) in zip(labels, sizes.tolist()):
        side = max(h, w)
        canvas = torch.full((side, side), IGNORE_LABEL, dtype=torch.long, device=device)
        canvas[:h, :w] = label[:h, :w].to(device)
        targets.append(canvas)
    return targets


def evaluate(predict, loader, num_classes, device, ori_resize=True, desc='val',
             show_progress=True, on_episode=None):
    """Run `predict` over the loader; returns the metrics of util.metrics plus 'loss' (mean
    cross-entropy per episode, for reference), summed over processes.
    on_episode(n, batch, b, pred): called for this process's n-th episode (b-th of its batch)
    with its prediction at target resolution (for visualisation)."""
    meter = IoUMeter(num_classes, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    start = time.time()
    with torch.no_grad():
        for batch in progress(loader, desc=desc, enabled=show_progress):
            logits = predict(batch).float()                     # B×2×H×W
            if ori_resize:
                targets = original_targets(batch, device)
            else:
                targets = list(batch['query_mask'].to(device).long())
            for b, target in enumerate(targets):
                out = F.interpolate(logits[b:b + 1], size=target.shape, mode='bilinear',
                                    align_corners=True)         # 1×2×h×w
                target = target[None]
                if (target != IGNORE_LABEL).any():
                    loss_sum += F.cross_entropy(out, target, ignore_index=IGNORE_LABEL).double()
                pred = out.argmax(1)
                meter.update(pred, target, batch['class_index'][b:b + 1])
                if on_episode is not None:
                    on_episode(count, batch, b, pred[0])
                count += 1
    episodes = torch.tensor(count, dtype=torch.int64, device=device)
    all_reduce_sum(episodes)
    all_reduce_sum(loss_sum)
    result = meter.all_reduce().summary()
    result['loss'] = loss_sum.item() / max(int(episodes), 1)
    result['seconds'] = time.time() - start
    return result


def run_episodes(net, dataset, num_classes, cfg, seed, env, precision, num_episodes=None,
                 predict=None, show_progress=True, on_episode=None, desc='val'):
    """Evaluate `net` on the episodes of one seed, sharded over the processes of `env`. The
    network is put in eval mode and back.

    Args:
        net: the SCCAN to evaluate.
        dataset: a val-mode EpisodeDataset.
        num_classes: len(dataset.classes), the classes mIoU averages over.
        cfg: the config (batch_size_val, workers, ori_resize, test_num, feature cache keys).
        seed: the episode seed; episode e draws with episode_seed(seed, e).
        env: util.distributed.DistEnv; precision: util.precision.Precision.
        num_episodes: default cfg.test_num.
        predict: predict(batch) → logits; default make_predictor(net, cfg, ...).
        on_episode: on_episode(n, batch, b, prediction) per episode of this process.

    Returns:
        dict: mIoU, FB-IoU, pIoU, class_IoU, class_episodes, episodes, loss, seconds.
    """
    num_episodes = num_episodes or cfg.test_num
    sampler = EvalSampler(len(dataset), num_episodes, seed, env.rank, env.world_size)
    loader = make_loader(SeededEpisodes(dataset), sampler,
                         cfg.batch_size_val, cfg.workers, drop_last=False,
                         pin_memory=env.device.type == 'cuda')
    predict = predict or make_predictor(net, cfg, precision, env.device)
    was_training = net.training
    net.eval()
    try:
        result = evaluate(predict, loader, num_classes, env.device, cfg.ori_resize, desc,
                          show_progress and env.is_main, on_episode)
    finally:
        net.train(was_training)
    cache = getattr(predict, 'cache', None)
    if cache is not None:
        log.info('feature cache: %s', cache.stats())
    return result


def format_result(result, class_names=None):
    """Multi-line text: per-class IoU, then mIoU, FB-IoU, pIoU."""
    names = class_names or [str(i) for i in range(len(result['class_IoU']))]
    lines = [f'  class {name}: IoU {iou:.4f} ({n} episodes)'
             for name, iou, n in zip(names, result['class_IoU'], result['class_episodes'])]
    lines.append(f'mIoU {result["mIoU"]:.4f}  FB-IoU {result["FB-IoU"]:.4f}  '
                 f'pIoU {result["pIoU"]:.4f}  ({result["episodes"]} episodes, '
                 f'{result["seconds"]:.1f}s, loss {result["loss"]:.4f})')
    return '\n'.join(lines)
