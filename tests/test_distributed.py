"""Two processes (Gloo, CPU) against one: the same step, the same validation metrics and
per-episode counts, --viz drawing the seed's first episodes, and a failure to claim the run
folder stopping both. (tests/torchrun_step.py does the same step under torchrun, for
tests/test_cuda.py.)"""
import os
import socket
import sys
import threading

import pytest
import torch
import torch.multiprocessing as mp

from helpers import (TINY, assert_same_step, files_below, make_pascal_config, tiny_net,
                     validate_and_step)
from model.checkpoint import weights_checkpoint
from util import distributed
from util.config import load_config
from util.datasets import episode_dataset
from util.evaluation.checkpoint_evaluation import evaluate_checkpoint
from util.files.run_lock import FolderInUse
from util.files.writer import save_checkpoint
from util.precision import Precision
from util.training.validation import Validation

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    return make_pascal_config(str(tmp_path_factory.mktemp('ddp')), n_train=0, n_val=10)


@pytest.fixture(scope='module')
def checkpoint(config, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('weights') / 'tiny.pth')
    cfg = load_config(config, TINY)
    save_checkpoint(weights_checkpoint(tiny_net(cfg), shot=1, config=cfg.to_dict()), path)
    return path


def _worker(rank, world_size, port, config, checkpoint, out_dir):
    """One of two Gloo processes: what rank 0 failing to claim the run folder does to each
    process; the step and validation of validate_and_step (rank 0 saves them); test_sccan.py's
    evaluation with --viz 3."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    env = distributed.setup()

    def claim():
        raise FolderInUse('exp/run is in use by another run: process 1 on host h')
    try:
        try:
            distributed.on_main_process(claim, env)
            outcome = 'went on'
        except Exception as e:
            outcome = f'{type(e).__name__}: {e}'
        with open(os.path.join(out_dir, f'claim_rank{rank}'), 'w') as f:
            f.write(outcome)
        result, grads, weights = validate_and_step(env, config)
        if env.is_main:
            torch.save({'grads': grads, 'weights': weights, 'result': result},
                       os.path.join(out_dir, 'step.pt'))
        evaluate_checkpoint(load_config(config, TINY), env, checkpoint, episodes=5, viz=3,
                            out=os.path.join(out_dir, 'report.json'))
        # training's validation of 7 episodes, one a batch (4 here, 3 there), with a collective
        # stop check as the trainer's
        cfg = load_config(config, TINY + ['test_num', '7'])
        validation = Validation(cfg, env, tiny_net(cfg), Precision('cpu'))
        checks = []
        validation('a test', lambda: checks.append(distributed.all_reduce_sum(torch.ones(1)).item()))
        with open(os.path.join(out_dir, f'checks_rank{rank}'), 'w') as f:
            f.write(repr(checks))
    finally:
        distributed.cleanup()


@pytest.fixture(scope='module')
def two_processes(config, checkpoint, tmp_path_factory):
    """The folder where the two processes of _worker left their results."""
    out_dir = str(tmp_path_factory.mktemp('two_processes'))
    mp.spawn(_worker, args=(2, free_port(), config, checkpoint, out_dir), nprocs=2, join=True)
    return out_dir


def test_when_the_main_process_cannot_claim_the_run_no_process_goes_on(two_processes):
    outcomes = {}
    for rank in (0, 1):
        with open(os.path.join(two_processes, f'claim_rank{rank}')) as f:
            outcomes[rank] = f.read()
    assert set(outcomes.values()) == {'FolderInUse: exp/run is in use by another run: process 1 '
                                      'on host h'}


def test_a_validation_checks_for_a_stop_alike_on_every_process(two_processes):
    """The stop check of training's validation is a collective: it runs before the batches
    that every process has (3 of 4 and 3), never one process alone."""
    for rank in (0, 1):
        with open(os.path.join(two_processes, f'checks_rank{rank}')) as f:
            assert f.read() == '[2.0, 2.0, 2.0]'


def test_two_gloo_processes_step_and_validate_as_one(config, two_processes):
    one = validate_and_step(distributed.DistEnv(0, 1, 0, torch.device('cpu')), config)
    assert_same_step(one, torch.load(os.path.join(two_processes, 'step.pt'), weights_only=False),
                     config)


def test_viz_under_two_processes_draws_the_first_episodes_of_the_seed(config, checkpoint,
                                                                     two_processes, tmp_path):
    """--viz 3 means episodes 0, 1, 2 of the seed, whichever process evaluates them (each
    process numbered its own episodes before): the pictures one process draws."""
    cfg = load_config(config, TINY)
    expected = [f'episode_{e:04d}_class{episode.class_id}.png'
                for e, episode in enumerate(episode_dataset(cfg, 'val').plan(321, 3))]
    evaluate_checkpoint(cfg, distributed.DistEnv(0, 1, 0, torch.device('cpu')), checkpoint,
                        episodes=5, viz=3, out=str(tmp_path / 'report.json'))
    assert sorted(os.listdir(tmp_path / 'report_viz')) == expected
    assert files_below(os.path.join(two_processes, 'report_viz')) == files_below(tmp_path / 'report_viz')


def test_the_group_goes_down_after_threads_waiting_for_the_gil_ran(monkeypatch):
    """Gloo's worker threads take the GIL to free the collectives they ran; one still waiting for
    it when the interpreter exits is killed inside a C++ destructor and the process aborts (it
    did after complete two-process runs). cleanup() hands the GIL over before taking the group
    down: here to a thread woken just before, which a switch interval of a minute would otherwise
    keep waiting."""
    torch.distributed.init_process_group('gloo', store=torch.distributed.HashStore(), rank=0,
                                         world_size=1)
    ran, ran_when_taken_down = [], []
    destroy = torch.distributed.destroy_process_group
    monkeypatch.setattr(torch.distributed, 'destroy_process_group',
                        lambda: (ran_when_taken_down.append(bool(ran)), destroy()))
    woken = threading.Event()
    waiting = threading.Thread(target=lambda: (woken.wait(), ran.append(True)))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(60)    # the main thread keeps the GIL until it blocks
    try:
        waiting.start()          # runs until it blocks in woken.wait()
        woken.set()              # now it waits for the GIL
        distributed.cleanup()
    finally:
        sys.setswitchinterval(interval)
    waiting.join()
    assert ran_when_taken_down == [True] and not torch.distributed.is_initialized()
