"""Validation during training: the evaluation loop (util.evaluate.run_episodes) on the val
episodes of manual_seed."""
import logging

from util.datasets import episode_dataset
from util.evaluate import format_result, make_predictor, run_episodes

log = logging.getLogger('sccan')


class Validation:
    """Validates `net` on the config's val episodes; one predictor for the whole run, so that
    its feature cache (if any) serves every validation."""

    def __init__(self, cfg, env, net, precision):
        self.cfg, self.env, self.net, self.precision = cfg, env, net, precision
        self.data = episode_dataset(cfg, 'val')
        self.predict = make_predictor(net, cfg, precision, env.device)

    def __call__(self, where):
        """The metrics of util.evaluate; `where` (e.g. 'epoch 3 (step 120)') names it in the log."""
        log.info('validation at %s: %d episodes', where, self.cfg.test_num)
        result = run_episodes(self.net, self.data, self.cfg, self.cfg.manual_seed, self.env,
                              self.precision, predict=self.predict)
        if self.predict.replay is not None:     # training gets the CUDA graphs' memory back
            self.predict.replay.release()
        log.info('validation at %s:\n%s', where, format_result(result, self.data.classes))
        return result
