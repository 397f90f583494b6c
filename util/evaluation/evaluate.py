"""THE evaluation loop: training's validation and test_sccan.py both run `run_episodes`.

Protocol (the authors' test_sccan.py, validate): a plan of episodes (by default the data set's
`plan(seed, num_episodes)`: episode e querying image e % len(list)); logits resized to the
original label resolution (`ori_resize`: the label placed top-left in an L×L canvas of ignore, L
its longer side) or else compared at the network input size. Episodes are dealt over processes
and the pixel counts summed, and the per-episode counts gathered in episode order, so N
processes report what one would.

Speed (docs/performance.md): episodes go through the network `batch_size_val` at a time (empty:
EVAL_BATCH_CUDA on CUDA, one on other devices), each still scored alone at its own size; on
CUDA the network's forward is replayed from recorded CUDA graphs (`cuda_graphs`,
util.evaluation.replay); and the loop never waits for the device before its end, so loading,
launching and computing overlap.

A predictor is any predict(batch) → B×2×H×W logits for the batch's B episodes, returned on the
evaluation's device (`check_logits` enforces it); the network's own are NetworkPredictors.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from model import BackboneFeatures
from util.distributed import all_reduce_sum
from util.episodes import PlannedEpisodes, batch_tensors, batches_of, make_loader, shard
from util.evaluation.feature_cache import FeatureCache
from util.evaluation.metrics import EpisodeCounts, IoUMeter, intersection_union
from util.evaluation.replay import capture_cuda_graph, replayed
from util.files.image_io import IGNORE_LABEL
from util.log import progress

if TYPE_CHECKING:
    from model import SCCAN
    from util.config import Config
    from util.datasets.cross_domain import PatnetEpisodes
    from util.datasets.pascal_coco import EpisodeDataset
    from util.distributed import DistEnv
    from util.episodes import Episode
    from util.evaluation.replay import Capture, Replay
    from util.precision import Precision

log = logging.getLogger('sccan')

# A collated batch of episodes (util.episodes.collate_episodes): its entries by name.
Batch = Mapping[str, Any]
# predict(batch) → B×2×H×W logits on the evaluation's device (see the module docstring).
Predictor = Callable[[Batch], torch.Tensor]

# Episodes per forward on CUDA when batch_size_val is empty: at one per call the GPU waits for
# kernel launches most of the time; eight per call (float32, H200, 473×473) took 5.8 ms an
# episode against 17.7 ms. CPUs are busy at one per call already.
EVAL_BATCH_CUDA = 8
# The keys of evaluate's result that vary from run to run of the same episodes.
TIMINGS = ('seconds', 'episodes_per_second')


def eval_batch_size(cfg: Config, device: torch.device | str) -> int:
    """Episodes per evaluation forward on `device`: cfg.batch_size_val, or when it is empty
    EVAL_BATCH_CUDA on CUDA and 1 elsewhere."""
    if cfg.batch_size_val is not None:
        return cfg.batch_size_val
    return EVAL_BATCH_CUDA if torch.device(device).type == 'cuda' else 1


class NetworkPredictor:
    """predict(batch) = function(*inputs(batch)), a part of a network's eval forward run on a
    batch's tensors.

    Attributes:
        replay: with a `capture` strategy (util.evaluation.replay, e.g. capture_cuda_graph), the
            Replay that runs `function` from its recordings (`replay.release()` frees them); else
            None.
        cache: the FeatureCache that `inputs` looks the backbone features up in, or None.
    """

    def __init__(self, function: Callable[..., torch.Tensor],
                 inputs: Callable[[Batch], Sequence[torch.Tensor]], net: nn.Module,
                 capture: Capture | None = None, cache: FeatureCache | None = None):
        self.replay: Replay | None = replayed(net, function, capture) if capture else None
        self.cache = cache
        self._run = self.replay if self.replay is not None else function
        self._inputs = inputs

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self._run(*self._inputs(batch))


def make_predictor(net: SCCAN, cfg: Config, precision: Precision,
                   device: torch.device | str) -> NetworkPredictor:
    """predict(batch) → B×2×H×W logits on `device`, the network run on the batch. With
    cfg.feature_cache_gb > 0 the backbone features of every image are kept for the predictor's
    lifetime (util.evaluation.feature_cache): make one predictor per run and pass it to every
    run_episodes, so that each image goes through the backbone once. With cfg.cuda_graphs on
    CUDA the network is replayed from recorded CUDA graphs (`predict.replay.release()` frees
    them)."""
    capture = capture_cuda_graph if cfg.cuda_graphs and torch.device(device).type == 'cuda' else None
    if cfg.feature_cache_gb > 0:
        cache = FeatureCache(cfg.feature_cache_gb, cfg.feature_cache_device)
        return cached_predictor(net, cache, precision, device, ('val', cfg.val_size), capture)
    return forward_predictor(net, precision, device, capture)


def forward_predictor(net: nn.Module, precision: Precision, device: torch.device | str,
                      capture: Capture | None = None) -> NetworkPredictor:
    """predict(batch) → B×2×H×W logits with one forward pass; with a `capture` strategy
    (util.evaluation.replay, e.g. capture_cuda_graph), replayed from recordings of it
    (`predict.replay`)."""
    def forward(query, support, support_masks):
        with precision.autocast():
            return net(query, support, support_masks)
    return NetworkPredictor(forward, lambda batch: batch_tensors(batch, device), net, capture)


def cached_predictor(net: SCCAN, cache: FeatureCache, precision: Precision, device: torch.device | str,
                     transform_key: Hashable, capture: Capture | None = None) -> NetworkPredictor:
    """predict(batch) → logits, the backbone features of the batch's images looked up in
    `cache` by (image path, transform_key) and computed only for the images not seen before;
    with a `capture` strategy, what follows the backbone replayed from recordings
    (util.evaluation.replay)."""
    def segment(query_mid, query_high, support_mid, support_high, support_masks):
        # support features B×K×C×h×w: every input has one row per episode
        with precision.autocast():
            return net.segment(BackboneFeatures(query_mid, query_high),
                               BackboneFeatures(support_mid.flatten(0, 1), support_high.flatten(0, 1)),
                               support_masks, net.output_size(support_masks.shape[-2:]))

    def inputs(batch):
        query, support, support_masks = batch_tensors(batch, device)
        b, k = support_masks.shape[:2]
        query_keys = [(path, transform_key) for path in batch['query_path']]
        # support_paths collates shot-major (K lists of B); the features go episode-major.
        support_keys = [(batch['support_paths'][j][i], transform_key)
                        for i in range(b) for j in range(k)]
        with precision.autocast():
            query_feats = cache.encode(net, query, query_keys)
            support_feats = cache.encode(net, support.flatten(0, 1), support_keys)
        return (*query_feats, *(f.unflatten(0, (b, k)) for f in support_feats), support_masks)
    return NetworkPredictor(segment, inputs, net, capture, cache)


def check_logits(logits: torch.Tensor, batch: Batch, device: torch.device | str) -> torch.Tensor:
    """`logits` if they keep the evaluation's contract with its predictors: B×2×H×W for the
    batch's B episodes, on the evaluation's `device`; else a ValueError saying what differs."""
    if not on_device(logits, device):
        raise ValueError(f'the predictor returned its logits on {logits.device}, but the '
                         f'evaluation runs on {device}: a predictor must return them on the '
                         'evaluation device')
    episodes = len(batch['episode_number'])
    if logits.dim() != 4 or tuple(logits.shape[:2]) != (episodes, 2):
        raise ValueError(f'the predictor returned logits of shape {tuple(logits.shape)} for a '
                         f'batch of {episodes} episodes; expected {episodes}×2×H×W')
    return logits


def on_device(tensor: torch.Tensor, device: torch.device | str) -> bool:
    """Whether `tensor` is on `device` ('cuda' without an index: the current one)."""
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return tensor.device == device


def original_targets(batch: Batch, device: torch.device | str) -> list[torch.Tensor]:
    """The ori_resize targets of a batch: per episode an L×L label (L = longer side of the
    original label), the label top-left, the rest ignore."""
    labels = batch['query_mask_original'].to(device, non_blocking=True)
    targets = []
    for label, (h, w) in zip(labels, batch['original_size'].tolist()):
        side = max(h, w)
        canvas = torch.full((side, side), IGNORE_LABEL, dtype=torch.long, device=device)
        canvas[:h, :w] = label[:h, :w]
        targets.append(canvas)
    return targets


def episode_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of 1×2×h×w logits over the non-ignored pixels of a 1×h×w target; 0
    when there are none. Computed on the device: no host synchronisation. Summed after the
    per-pixel losses: the summing kernel of reduction='sum' adds with atomics on CUDA, in no
    fixed order, and the figure would differ between two seed_deterministic runs."""
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL, reduction='none').sum()
    return total / (target != IGNORE_LABEL).sum().clamp_min(1)


def evaluate(predict: Predictor, loader: DataLoader | Sequence[Batch], num_classes: int,
             device: torch.device | str, ori_resize: bool = True, desc: str = 'val',
             show_progress: bool = True,
             on_episode: Callable[[int, Batch, int, torch.Tensor], object] | None = None,
             stop_check: Callable[[], object] | None = None) -> dict[str, Any]:
    """Run `predict` over the loader's batches (each with the `episode_number` of its
    episodes).

    Returns:
        dict: the metrics of util.evaluation.metrics (mIoU, FB-IoU, pIoU, class_IoU, class_episodes,
        episodes), 'loss' (mean cross-entropy per episode, for reference), 'seconds' (wall
        time, loading included) and 'episodes_per_second' (all processes' episodes over it),
        and 'per_episode': the EpisodeCounts of every episode of every process.
        on_episode(e, batch, b, pred) is called for episode number e (the b-th of its batch)
        with its prediction at target resolution (for visualisation). stop_check(), before
        each batch, may raise to abandon the evaluation (training stops on a signal).
    """
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    episodes = []    # (episode, class index) of this process's episodes, on the host
    counts = []      # their BG ∩, FG ∩, BG ∪, FG ∪, on the device
    start = time.time()
    with torch.no_grad(), batches_of(loader) as batches:
        for batch in progress(batches, total=len(loader), desc=desc, enabled=show_progress):
            if stop_check is not None:
                stop_check()
            logits = check_logits(predict(batch), batch, device).float()    # B×2×H×W
            if ori_resize:
                targets = original_targets(batch, device)
            else:
                targets = list(batch['query_mask'].to(device, non_blocking=True).long())
            for b, target in enumerate(targets):
                out = F.interpolate(logits[b:b + 1], size=target.shape, mode='bilinear',
                                    align_corners=True)         # 1×2×h×w
                target = target[None]
                loss_sum += episode_loss(out, target).double()
                pred = out.argmax(1)
                inter, union = intersection_union(pred, target)
                e = int(batch['episode_number'][b])
                episodes.append((e, int(batch['class_index'][b])))
                counts.append(torch.cat([inter[0], union[0]]))
                if on_episode is not None:
                    on_episode(e, batch, b, pred[0])
    mine = torch.cat([torch.tensor(episodes, dtype=torch.int64).reshape(-1, 2).to(device),
                      torch.stack(counts) if counts else
                      torch.zeros((0, 4), dtype=torch.int64, device=device)], dim=1)
    scored = EpisodeCounts.gathered(mine)         # every process's episodes: scored once, here
    all_reduce_sum(loss_sum)
    result = IoUMeter(num_classes).add(scored.intersection, scored.union,
                                       scored.class_index).summary()
    result['loss'] = loss_sum.item() / max(len(scored.episode), 1)
    result['seconds'] = time.time() - start
    result['episodes_per_second'] = len(scored.episode) / result['seconds']
    result['per_episode'] = scored
    return result


def run_episodes(net: nn.Module, dataset: EpisodeDataset | PatnetEpisodes, cfg: Config, seed: int,
                 env: DistEnv, precision: Precision, num_episodes: int | None = None,
                 plan: Sequence[Episode] | None = None, predict: Predictor | None = None,
                 show_progress: bool = True,
                 on_episode: Callable[[int, Batch, int, torch.Tensor], object] | None = None,
                 desc: str = 'val', stop_check: Callable[[], object] | None = None) -> dict[str, Any]:
    """Evaluate `net` on a plan of episodes, dealt round-robin over the processes of `env`. The
    network is put in eval mode and back.

    Args:
        net: the SCCAN to evaluate.
        dataset: an evaluation data set (util.datasets: classes, plan, load); mIoU averages
            over its `classes`.
        cfg: the config (batch_size_val, workers, ori_resize, test_num, cuda_graphs, feature
            cache keys).
        seed: the episode seed: the default plan is dataset.plan(seed, num_episodes), and
            episode e loads under episode_seed(seed, e).
        env: util.distributed.DistEnv; precision: util.precision.Precision.
        num_episodes: default cfg.test_num.
        plan: the Episodes to run instead of the seed's (e.g. replayed from a file).
        predict: predict(batch) → logits; default make_predictor(net, cfg, ...).
        on_episode: on_episode(e, batch, b, prediction) per episode of this process.
        stop_check: called before each batch; may raise to abandon the evaluation.

    Returns:
        dict: mIoU, FB-IoU, pIoU, class_IoU, class_episodes, episodes, loss, seconds,
        episodes_per_second and per_episode (util.evaluation.metrics.EpisodeCounts, of all
        processes, in episode order).
    """
    if plan is None:
        plan = dataset.plan(seed, num_episodes or cfg.test_num)
    loader = make_loader(PlannedEpisodes(dataset, plan, seed),
                         shard(len(plan), env.rank, env.world_size),
                         eval_batch_size(cfg, env.device), cfg.workers, drop_last=False,
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


def format_result(result: Mapping[str, Any], class_names: Sequence[str | int] | None = None) -> str:
    """Multi-line text: per-class IoU, then mIoU, FB-IoU, pIoU."""
    names = class_names or [str(i) for i in range(len(result['class_IoU']))]
    lines = [f'  class {name}: IoU {iou:.4f} ({n} episodes)'
             for name, iou, n in zip(names, result['class_IoU'], result['class_episodes'])]
    lines.append(f'mIoU {result["mIoU"]:.4f}  FB-IoU {result["FB-IoU"]:.4f}  '
                 f'pIoU {result["pIoU"]:.4f}  ({result["episodes"]} episodes, '
                 f'{result["seconds"]:.1f}s, {result["episodes_per_second"]:.1f} episodes/s, '
                 f'loss {result["loss"]:.4f})')
    return '\n'.join(lines)
