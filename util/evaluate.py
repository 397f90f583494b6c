"""THE evaluation loop: training's validation and test_sccan.py both run `run_episodes`.

Protocol (the authors' test_sccan.py, validate): a plan of episodes (by default the data set's
`plan(seed, num_episodes)`: episode e querying image e % len(list)); logits resized to the
original label resolution (`ori_resize`: the label placed top-left in an L×L canvas of ignore, L
its longer side) or else compared at the network input size. Episodes are dealt over processes
and the pixel counts summed, and the per-episode counts gathered in episode order, so N
processes report what one would.
"""
import logging
import time

import torch
import torch.nn.functional as F

from util.distributed import all_reduce_sum
from util.episodes import PlannedEpisodes, batch_tensors, batches_of, make_loader, shard
from util.feature_cache import FeatureCache
from util.image_io import IGNORE_LABEL
from util.log import progress
from util.metrics import EpisodeCounts, IoUMeter, intersection_union

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
             show_progress=True, on_episode=None, stop_check=None):
    """Run `predict` over the loader's batches (each with the `episode_number` of its
    episodes).

    Returns:
        dict: the metrics of util.metrics (mIoU, FB-IoU, pIoU, class_IoU, class_episodes,
        episodes), 'loss' (mean cross-entropy per episode, for reference) and 'seconds', summed
        over processes, and 'per_episode': the EpisodeCounts of every episode of every process.
        on_episode(e, batch, b, pred) is called for episode number e (the b-th of its batch)
        with its prediction at target resolution (for visualisation). stop_check(), before
        each batch, may raise to abandon the evaluation (training stops on a signal).
    """
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    rows = []        # episode, class index, BG ∩, FG ∩, BG ∪, FG ∪ of this process's episodes
    start = time.time()
    with torch.no_grad(), batches_of(loader) as batches:
        for batch in progress(batches, total=len(loader), desc=desc, enabled=show_progress):
            if stop_check is not None:
                stop_check()
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
                class_index = batch['class_index'][b:b + 1]
                inter, union = intersection_union(pred, target)
                e = int(batch['episode_number'][b])
                rows.append(torch.cat([torch.tensor([e, int(class_index)], device=device),
                                       inter[0], union[0]]))
                if on_episode is not None:
                    on_episode(e, batch, b, pred[0])
    mine = torch.stack(rows) if rows else torch.zeros((0, 6), dtype=torch.int64, device=device)
    counts = EpisodeCounts.gathered(mine)         # every process's episodes: scored once, here
    all_reduce_sum(loss_sum)
    result = IoUMeter(num_classes).add(counts.intersection, counts.union,
                                       counts.class_index).summary()
    result['loss'] = loss_sum.item() / max(len(counts.episode), 1)
    result['seconds'] = time.time() - start
    result['per_episode'] = counts
    return result


def run_episodes(net, dataset, cfg, seed, env, precision, num_episodes=None, plan=None,
                 predict=None, show_progress=True, on_episode=None, desc='val', stop_check=None):
    """Evaluate `net` on a plan of episodes, dealt round-robin over the processes of `env`. The
    network is put in eval mode and back.

    Args:
        net: the SCCAN to evaluate.
        dataset: an evaluation data set (util.datasets: classes, plan, load); mIoU averages
            over its `classes`.
        cfg: the config (batch_size_val, workers, ori_resize, test_num, feature cache keys).
        seed: the episode seed: the default plan is dataset.plan(seed, num_episodes), and
            episode e loads under episode_seed(seed, e).
        env: util.distributed.DistEnv; precision: util.precision.Precision.
        num_episodes: default cfg.test_num.
        plan: the Episodes to run instead of the seed's (e.g. replayed from a file).
        predict: predict(batch) → logits; default make_predictor(net, cfg, ...).
        on_episode: on_episode(e, batch, b, prediction) per episode of this process.
        stop_check: called before each batch; may raise to abandon the evaluation.

    Returns:
        dict: mIoU, FB-IoU, pIoU, class_IoU, class_episodes, episodes, loss, seconds and
        per_episode (util.metrics.EpisodeCounts, of all processes, in episode order).
    """
    if plan is None:
        plan = dataset.plan(seed, num_episodes or cfg.test_num)
    loader = make_loader(PlannedEpisodes(dataset, plan, seed),
                         shard(len(plan), env.rank, env.world_size),
                         cfg.batch_size_val, cfg.workers, drop_last=False,
                         pin_memory=env.device.type == 'cuda')
    predict = predict or make_predictor(net, cfg, precision, env.device)
    was_training = net.training
    net.eval()
    try:
        result = evaluate(predict, loader, len(dataset.classes), env.device, cfg.ori_resize,
                          desc, show_progress and env.is_main, on_episode, stop_check)
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
