"""Training building blocks without a model: schedule, samplers, seeded episodes, checkpoints."""
import os
import random

import numpy as np
import pytest
import torch

from util.config import default_config
from util.episodes import EvalSampler, SeededEpisodes, TrainSampler
from util.optim import apply_schedule, poly_lr, set_sgd_lr
from util.training_state import (CheckpointError, check_compatible, detect_layers,
                                 find_resume_path, load_checkpoint, save_checkpoint)


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


def test_eval_sampler_cycles_the_list_and_shards():
    one = list(EvalSampler(4, 10, seed=321))
    assert [i for i, _ in one] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert len({s for _, s in one}) == 10
    shards = [list(EvalSampler(4, 10, 321, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(one)


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


# --- checkpoints ---
def test_atomic_save_leaves_no_temporary_and_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / 'c.pth')
    save_checkpoint({'epoch': 1, 'state_dict': {'w': torch.ones(2)}}, path)
    with pytest.raises(Exception):
        save_checkpoint({'epoch': 2, 'bad': lambda: 0}, path)     # lambdas do not pickle
    assert os.listdir(tmp_path) == ['c.pth']
    assert load_checkpoint(path)['epoch'] == 1


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'c.pth'
    save_checkpoint({'state_dict': {'w': torch.randn(1000)}}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupted'):
        load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        load_checkpoint(str(tmp_path / 'none.pth'))


def fake_state_dict(layer3_blocks, prefix=''):
    return {f'{prefix}backbone.body.layer3.{i}.conv1.weight': torch.zeros(1)
            for i in range(layer3_blocks)}


def test_backbone_depth_is_read_from_layer3_blocks():
    assert detect_layers(fake_state_dict(6)) == 50
    assert detect_layers(fake_state_dict(23, 'module.')) == 101
    assert detect_layers({'x': torch.zeros(1)}) is None


def test_checkpoints_of_another_backbone_or_shot_are_refused():
    cfg = default_config()
    with pytest.raises(CheckpointError, match='ResNet-101 checkpoint but the config has layers 50'):
        check_compatible({'state_dict': fake_state_dict(23)}, cfg, 'authors.pth')
    ours = {'state_dict': fake_state_dict(6), 'layers': 50, 'shot': 5}
    with pytest.raises(CheckpointError, match='trained with shot 5 but the config has shot 1'):
        check_compatible(ours, cfg, 'ours.pth')
    check_compatible(ours, cfg, 'ours.pth', any_shot=True)


def test_resume_names_are_paths_or_snapshot_files(tmp_path):
    (tmp_path / 'train_latest.pth').write_bytes(b'')
    assert find_resume_path('train_latest.pth', str(tmp_path)) == str(tmp_path / 'train_latest.pth')
    with pytest.raises(FileNotFoundError, match='looked as given and in'):
        find_resume_path('epoch_9.pth', str(tmp_path))


# --- precision ---
def test_amp_settings_on_cpu(caplog):
    from util.precision import precision_for
    cpu = torch.device('cpu')
    bf16 = precision_for(default_config().replace(amp='bf16'), cpu)
    with bf16.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    assert not bf16.grad_scaler().is_enabled()
    fp16 = precision_for(default_config().replace(amp='fp16', channels_last=True), cpu)
    assert fp16.dtype is None and fp16.channels_last
    assert 'fp16 needs CUDA' in caplog.text
