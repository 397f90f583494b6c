"""Validation during training: the evaluation loop (util.evaluation.evaluate.run_episodes) on the
val episodes of manual_seed."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from util.datasets import episode_dataset
from util.episodes import shard
from util.evaluation.evaluate import eval_batch_size, format_result, make_predictor, run_episodes

if TYPE_CHECKING:
    from model.sccan import SCCAN
    from util.config import Config
    from util.distributed import DistEnv
    from util.precision import Precision

log = logging.getLogger('sccan')


class Validation:
    """Validates `net` on the config's val episodes; one predictor for the whole run, so that
    its feature cache (if any) serves every validation."""

    def __init__(self, cfg: Config, env: DistEnv, net: SCCAN, precision: Precision):
        self.cfg, self.env, self.net, self.precision = cfg, env, net, precision
        self.data = episode_dataset(cfg, 'val')
        self.predict = make_predictor(net, cfg, precision, env.device)
        # the batches every process runs (their shares of the episodes differ by one at most)
        batch = eval_batch_size(cfg, env.device)
        self.common_batches = min(-(-len(shard(cfg.test_num, rank, env.world_size)) // batch)
                                  for rank in range(env.world_size))

    def __call__(self, where, stop_check=None):
        """The metrics of util.evaluation.evaluate; `where` (e.g. 'epoch 3 (step 120)') names it in
        the log. stop_check(), a collective on every process, runs before each of the batches they
        all run, and may raise to abandon the validation."""
        log.info('validation at %s: %d episodes', where, self.cfg.test_num)
        # one check per batch that every process runs: the processes call the collective alike
        checks = iter([stop_check] * self.common_batches if stop_check else [])
        result = run_episodes(self.net, self.data, self.cfg, self.cfg.manual_seed, self.env,
                              self.precision, predict=self.predict,
                              stop_check=lambda: next(checks, lambda: None)())
        if self.predict.replay is not None:     # training gets the CUDA graphs' memory back
            self.predict.replay.release()
        log.info('validation at %s:\n%s', where, format_result(result, self.data.classes))
        return result
