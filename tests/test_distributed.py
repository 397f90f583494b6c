"""Two processes (Gloo, CPU) against one: the same step and the same validation metrics.

Run as a script under torchrun (`torchrun --nproc_per_node=N tests/test_distributed.py CONFIG
OUT`, with the repository on PYTHONPATH), each process does the same step: tests/test_cuda.py
compares it with one process on a GPU (NCCL)."""
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import make_pascal_config, without_dropout
from util import distributed
from util.config import load_config
from util.datasets import episode_dataset
from util.evaluate import run_episodes
from util.experiment import build_model
from util.optim import build_optimizers, forward_backward, optimizer_step, set_sgd_lr
from util.outputs import FolderInUse
from util.precision import Precision

SIZE = 57
TINY = ['train_h', '57', 'train_w', '57', 'val_size', '57', 'fts_size', '16', 'depth', '2',
        'reduce_dim', '32', 'backbone_weights', 'None', 'batch_size_val', '2', 'workers', '0']


def tiny_net(cfg):
    torch.manual_seed(0)
    return without_dropout(build_model(cfg))   # dropout draws differ between processes


def episode_batch(n=4, shot=1):
    g = torch.Generator().manual_seed(1)
    masks = lambda *s: (torch.rand(*s, generator=g) > 0.6).long()  # noqa: E731
    query_mask = masks(n, SIZE, SIZE)
    query_mask[:, :3] = 255
    return {'query': torch.randn(n, 3, SIZE, SIZE, generator=g),
            'support': torch.randn(n, shot, 3, SIZE, SIZE, generator=g),
            'support_masks': masks(n, shot, SIZE, SIZE), 'query_mask': query_mask}


def validate_and_step(env, config):
    """A validation of 7 episodes (dealt unevenly over 2 processes), then one training step on this process's share of a fixed
    batch of 4 episodes; returns (metrics, gradients, weights after the step)."""
    cfg = load_config(config, TINY)
    net = tiny_net(cfg).to(env.device)
    model = distributed.wrap_ddp(net, env) if dist.is_initialized() else net
    sgd, adamw = build_optimizers(net, cfg)
    set_sgd_lr(sgd, cfg.base_lr)
    precision = Precision(env.device.type)
    dataset = episode_dataset(cfg, 'val')
    result = run_episodes(net, dataset, cfg, 321, env, precision,
                          num_episodes=7, show_progress=False)
    result.pop('seconds')
    scaler = precision.grad_scaler()
    share = {k: v[env.rank::env.world_size] for k, v in episode_batch().items()}
    model.train()
    forward_backward(model, share, precision, scaler, env.device)
    grads = {n: p.grad.to('cpu', copy=True) for n, p in net.named_parameters() if p.grad is not None}
    optimizer_step(scaler, (sgd, adamw))
    return result, grads, {k: v.to('cpu', copy=True) for k, v in net.state_dict().items()}


def _worker(rank, world_size, port, config, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    step_and_save(config, out)


def step_and_save(config, out):
    """One process of a world that torchrun's variables describe: validate_and_step, and rank 0
    saves what it got to `out`. A world of one joins a process group too, so that a single GPU
    still runs NCCL and DDP's reducer."""
    torch.set_num_threads(1)
    env = distributed.setup()
    if not dist.is_initialized():
        device = (torch.device('cuda', torch.cuda.current_device()) if env.device.type == 'cuda'
                  else env.device)
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
        env = distributed.DistEnv(0, 1, 0, device)
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


def assert_same_step(one, many, config, tolerance=1.0):
    """`many` (what step_and_save saved from several processes) against `one` (validate_and_step
    of one process with the whole batch); the float tolerances are multiplied by `tolerance`."""
    one_result, one_grads, one_weights = one
    # gradients of 2 × 2 episodes averaged by DDP = gradients of the 4-episode batch
    assert one_grads.keys() == many['grads'].keys()
    assert max_difference(one_grads, many['grads'], one_grads) <= 1e-6 * tolerance
    # so are the SGD-trained weights after the step; AdamW's first step moves every weight by
    # about ±lr·g/(|g| + 1e-8), which turns rounding in near-zero gradients into ~1e-6 changes
    sgd_trained = [k for k in one_weights if not k.startswith('transformer.')]
    assert max_difference(one_weights, many['weights'], sgd_trained) <= 1e-6 * tolerance
    assert max_difference(one_weights, many['weights'], one_weights) <= 1e-5 * tolerance
    initial = tiny_net(load_config(config, TINY)).state_dict()
    moved = [k for k in initial if not torch.equal(initial[k], one_weights[k])]
    assert any(k.startswith('transformer.') for k in moved) and 'cls_meta.3.bias' in moved
    # sharded validation: the same episodes, the same summed pixel counts
    # The cross-entropy is a float sum over batches of other sizes per process (and float
    # convolutions round differently per batch size); the pixel counts below are exact.
    many_result, one_result = dict(many['result']), dict(one_result)
    assert many_result.pop('loss') == pytest.approx(one_result.pop('loss'), rel=1e-6 * tolerance)
    assert many_result == one_result            # per_episode too: gathered in episode order
    assert one_result['episodes'] == 7 and one_result['FB-IoU'] > 0
    assert one_result['per_episode'].episode.tolist() == list(range(7))


def _claim_worker(rank, world_size, port, out_dir):
    """Rank 0 fails to claim (as when another run holds the folder); every rank records what
    it raised."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    env = distributed.setup()

    def claim():
        raise FolderInUse('exp/run is in use by another run: process 1 on host h')
    try:
        distributed.on_main_process(claim, env)
        outcome = 'went on'
    except Exception as e:
        outcome = f'{type(e).__name__}: {e}'
    finally:
        distributed.cleanup()
    with open(os.path.join(out_dir, f'rank{rank}'), 'w') as f:
        f.write(outcome)


def test_when_the_main_process_cannot_claim_the_run_no_process_goes_on(tmp_path):
    mp.spawn(_claim_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    outcomes = {name: (tmp_path / name).read_text() for name in ('rank0', 'rank1')}
    assert set(outcomes.values()) == {'FolderInUse: exp/run is in use by another run: process 1 '
                                      'on host h'}


def test_two_gloo_processes_step_and_validate_as_one(config, tmp_path, one_thread):
    out = str(tmp_path / 'rank0.pt')
    mp.spawn(_worker, args=(2, free_port(), config, out), nprocs=2, join=True)
    one = validate_and_step(distributed.DistEnv(0, 1, 0, torch.device('cpu')), config)
    assert_same_step(one, torch.load(out, weights_only=False), config)


if __name__ == '__main__':     # torchrun tests/test_distributed.py CONFIG OUT
    # Exact float32 on GPUs (no TF32 convolutions): the comparison is of the step, not of
    # TF32 rounding, which differs with the batch each process gets.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    step_and_save(*sys.argv[1:])
