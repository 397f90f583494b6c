"""Training building blocks without a model: schedule, samplers, seeded episodes, precision."""
import os
import random

import numpy as np
import pytest
import torch

from util.config import default_config
from util.episodes import SeededEpisodes, TrainSampler, shard
from util.files.run_paths import RunPaths
from util.files.writer import save_checkpoint
from util.training.checkpoints import Checkpointer, Progress
from util.optim import apply_schedule, poly_lr, set_sgd_lr


# --- learning rate ---
def test_poly_lr_and_the_10x_sgd_groups():
    assert poly_lr(0.005, 0, 100, 0.9) == 0.005
    assert poly_lr(0.005, 50, 100, 0.9) == pytest.approx(0.005 * 0.5 ** 0.9)
    assert poly_lr(0.005, 100, 100, 0.9) == 0.0
    opt = torch.optim.SGD([{'params': [torch.zeros(1)]}, {'params': [torch.zeros(1)]}], lr=1.0)
    set_sgd_lr(opt, 0.005)                       # index_split -1: every group 10x
    assert [g['lr'] for g in opt.param_groups] == [0.05, 0.05]
    set_sgd_lr(opt, 0.005, index_split=0)
    assert [g['lr'] for g in opt.param_groups] == [0.005, 0.05]


def test_warmup_starts_at_a_tenth():
    cfg = default_config().replace(warmup=True)
    opt = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    assert apply_schedule(opt, cfg, 0, 1000, 100) == pytest.approx(0.1 * cfg.base_lr)
    assert apply_schedule(opt, cfg, 25, 1000, 100) == pytest.approx(0.55 * cfg.base_lr)
    assert apply_schedule(opt, cfg, 50, 1000, 100) == pytest.approx(poly_lr(0.005, 50, 1000, 0.9))


# --- samplers ---
def test_two_processes_share_the_one_process_order_and_seeds():
    one = list(TrainSampler(10, seed=321))
    ranks = [list(TrainSampler(10, seed=321, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(one)
    assert ranks[0] == one[0::2] and ranks[1] == one[1::2]
    assert sorted(i for i, _ in one) == list(range(10))


def test_train_sampler_pads_skips_and_reshuffles_per_epoch():
    s = TrainSampler(7, seed=1, rank=1, world_size=2)
    full = list(s)
    assert len(full) == len(s) == 4                      # 7 padded to 8, 4 per process
    s.set_epoch(0, start=3)
    assert list(s) == full[3:] and len(s) == 1
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in full]


def test_evaluation_deals_the_episodes_round_robin():
    assert list(shard(10)) == list(range(10))
    assert [list(shard(10, r, 3)) for r in range(3)] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert list(shard(2, 2, 3)) == []             # more processes than episodes


# --- seeded episodes ---
class RandomItems(torch.utils.data.Dataset):
    """Draws from all three global generators, as augmentation does."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {'x': torch.tensor([i, random.random(), np.random.rand(), torch.rand(()).item()])}


def test_an_episode_depends_only_on_its_seed_and_leaves_global_rng_alone():
    episodes = SeededEpisodes(RandomItems())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = episodes[(1, 99)]['x']
    assert torch.equal(torch.get_rng_state(), before)
    random.random(), np.random.rand(), torch.rand(())
    assert torch.equal(episodes[(1, 99)]['x'], a)
    assert not torch.equal(episodes[(1, 98)]['x'], a)


# --- precision ---
def test_amp_settings_on_cpu(caplog):
    from util.precision import precision_for
    cpu = torch.device('cpu')
    bf16 = precision_for(default_config().replace(amp='bf16'), cpu)
    with bf16.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    assert not bf16.grad_scaler().is_enabled()
    fp16 = precision_for(default_config().replace(amp='fp16'), cpu)
    assert fp16.dtype is None
    assert 'fp16 needs CUDA' in caplog.text


def test_tf32_follows_the_config_on_cuda_only():
    """precision_for sets the process's TF32 use for CUDA runs, and leaves it for CPU runs."""
    from util.precision import precision_for
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        precision_for(default_config(), torch.device('cpu'))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        precision_for(default_config(), torch.device('cuda'))       # tf32: True by default
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        precision_for(default_config().replace(tf32=False), torch.device('cuda'))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --- the best checkpoint ---
def test_a_new_best_replaces_only_this_run_folders_previous_best(tmp_path):
    """A run resumed from another folder's checkpoint carries that run's best_path: its first
    new best leaves that file alone; its next new best replaces its own first one."""
    other_run = RunPaths(str(tmp_path / 'other'), 1)
    os.makedirs(other_run.snapshot)
    theirs = other_run.best(3, 0.5)
    save_checkpoint({'epoch': 3}, theirs)
    paths = RunPaths(str(tmp_path / 'run'), 1)
    progress = Progress(best_path=theirs)
    checkpointer = Checkpointer(paths, is_main=True)
    checkpointer.save_best(lambda: {'epoch': 4}, 4, 0.6, progress)
    first = paths.best(4, 0.6)
    assert progress.best_path == first and os.listdir(paths.snapshot) == [os.path.basename(first)]
    assert os.path.exists(theirs)
    checkpointer.save_best(lambda: {'epoch': 5}, 5, 0.7, progress)
    assert os.listdir(paths.snapshot) == ['train_epoch_5_0.7000.pth'] and os.path.exists(theirs)
    assert torch.load(progress.best_path, weights_only=False) == {'epoch': 5}
    # other processes write nothing
    Checkpointer(paths, is_main=False).save_best(lambda: {'epoch': 6}, 6, 0.8, progress)
    assert os.listdir(paths.snapshot) == ['train_epoch_5_0.7000.pth']
