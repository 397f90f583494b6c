"""Two processes (Gloo, CPU) against one: the same step and the same validation metrics."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from fakedata import make_pascal_config
from util import distributed
from util.config import load_config
from util.episodes import episode_dataset
from util.evaluate import run_episodes
from util.experiment import build_model
from util.optim import build_optimizers, forward_backward, optimizer_step, set_sgd_lr
from util.precision import Precision

SIZE = 57
TINY = ['train_h', '57', 'train_w', '57', 'val_size', '57', 'fts_size', '16', 'depth', '2',
        'reduce_dim', '32', 'backbone_weights', 'None', 'batch_size_val', '2', 'workers', '0']


def tiny_net(cfg):
    torch.manual_seed(0)
    net = build_model(cfg)
    for m in net.modules():       # dropout draws differ between processes; the rest must not
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    return net


def episode_batch(n=4, shot=1):
    g = torch.Generator().manual_seed(1)
    masks = lambda *s: (torch.rand(*s, generator=g) > 0.6).long()  # noqa: E731
    query_mask = masks(n, SIZE, SIZE)
    query_mask[:, :3] = 255
    return {'query': torch.randn(n, 3, SIZE, SIZE, generator=g),
            'support': torch.randn(n, shot, 3, SIZE, SIZE, generator=g),
            'support_masks': masks(n, shot, SIZE, SIZE), 'query_mask': query_mask}


def validate_and_step(env, config):
    """A validation of 6 episodes, then one training step on this process's share of a fixed
    batch of 4 episodes; returns (metrics, gradients, weights after the step)."""
    cfg = load_config(config, TINY)
    net = tiny_net(cfg).to(env.device)
    model = distributed.wrap_ddp(net, env) if env.distributed else net
    sgd, adamw = build_optimizers(net, cfg)
    set_sgd_lr(sgd, cfg.base_lr)
    precision = Precision('cpu')
    dataset = episode_dataset(cfg, 'val')
    result = run_episodes(net, dataset, len(dataset.classes), cfg, 321, env, precision,
                          num_episodes=6, show_progress=False)
    result.pop('seconds')
    scaler = precision.grad_scaler()
    share = {k: v[env.rank::env.world_size] for k, v in episode_batch().items()}
    model.train()
    forward_backward(model, share, precision, scaler, env.device)
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    optimizer_step(scaler, (sgd, adamw))
    return result, grads, {k: v.clone() for k, v in net.state_dict().items()}


def _worker(rank, world_size, port, config, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    env = distributed.setup()
    try:
        result, grads, weights = validate_and_step(env, config)
        if env.is_main:
            torch.save({'grads': grads, 'weights': weights, 'result': result}, out)
    finally:
        distributed.cleanup()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    return make_pascal_config(str(tmp_path_factory.mktemp('ddp')), n_train=0, n_val=10)


def max_difference(a, b, keys):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


@pytest.fixture
def one_thread():
    """The reference process computes with one thread, as the spawned ones: the same sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_gloo_processes_step_and_validate_as_one(config, tmp_path, one_thread):
    out = str(tmp_path / 'rank0.pt')
    mp.spawn(_worker, args=(2, free_port(), config, out), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    one_result, one_grads, one_weights = validate_and_step(
        distributed.DistEnv(0, 1, 0, torch.device('cpu')), config)
    # gradients of 2 × 2 episodes averaged by DDP = gradients of the 4-episode batch
    assert one_grads.keys() == two['grads'].keys()
    assert max_difference(one_grads, two['grads'], one_grads) <= 1e-6
    # so are the SGD-trained weights after the step; AdamW's first step moves every weight by
    # about ±lr·g/(|g| + 1e-8), which turns rounding in near-zero gradients into ~1e-6 changes
    sgd_trained = [k for k in one_weights if not k.startswith('transformer.')]
    assert max_difference(one_weights, two['weights'], sgd_trained) <= 1e-6
    assert max_difference(one_weights, two['weights'], one_weights) <= 1e-5
    initial = tiny_net(load_config(config, TINY)).state_dict()
    moved = [k for k in initial if not torch.equal(initial[k], one_weights[k])]
    assert any(k.startswith('transformer.') for k in moved) and 'cls_meta.3.bias' in moved
    # sharded validation: the same episodes, the same summed pixel counts
    # The cross-entropy is a float sum over batches of other sizes per process (and float
    # convolutions round differently per batch size); the pixel counts below are exact.
    assert two['result'].pop('loss') == pytest.approx(one_result.pop('loss'), rel=1e-6)
    assert two['result'] == one_result
    assert one_result['episodes'] == 6 and one_result['FB-IoU'] > 0
