"""Process group setup for `torchrun` and the few collectives the scripts need.

One code path for every case: a plain `python train_sccan.py` is a world of one process; under
`torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous variables) each process
joins the group, NCCL on GPUs and Gloo on CPU. The device is picked here: the process's GPU when
CUDA is available, else the CPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pickle
import re
import signal
import time
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from util.precision import resolve_device
from util.stop_signals import STOP_SIGNALS

_T = TypeVar('_T')
# How long cleanup() lets go of the GIL before the group goes down: of 24 two-process exits,
# 10 aborted without it and none with 1 ms; 50 ms is nothing at the end of a run.
GIL_HANDOVER_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes files, logs and TensorBoard scalars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(timeout_minutes: float = 30) -> DistEnv:
    """Join the process group when launched by torchrun; returns this process's DistEnv."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size == 1:
        return DistEnv(0, 1, 0, resolve_device('auto'))
    rank, local_rank = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f'local rank {local_rank} has no GPU: {torch.cuda.device_count()} '
                               'visible; start at most that many processes per node')
        torch.cuda.set_device(local_rank)
        device, backend = torch.device('cuda', local_rank), 'nccl'
    else:
        device, backend = torch.device('cpu'), 'gloo'
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes),
                            device_id=device if backend == 'nccl' else None)
    return DistEnv(rank, world_size, local_rank, device)


class PeerLost(RuntimeError):
    """Another process of the run stopped (killed, crashed, out of memory) while this one waited
    for it in a collective operation."""


def _is_communication_failure(error):
    """Whether `error` comes from the process group's backend: NCCL raises torch's DistError
    types, Gloo a RuntimeError naming its source file."""
    dist_error = getattr(dist, 'DistError', ())
    return (isinstance(error, dist_error) or
            re.search(r'\b(gloo|nccl)\b', str(error), re.I) is not None)


def _reason(error):
    """The backend's own first sentence, without its source location ('[.../pair.cc:537] ')."""
    text = re.sub(r'^\s*\[[^\]]*\]\s*', '', str(error).strip().splitlines()[0])
    return text.split('. ')[0].rstrip('.')


@contextlib.contextmanager
def peers_watched(env: DistEnv, how_to_continue: Callable[[], str] = lambda: '') -> Iterator[None]:
    """Inside: a collective that fails because another process of the run stopped raises
    PeerLost, one sentence for the user instead of the backend's traceback; from then on the
    stop signals (util.stop_signals) are ignored, so that the process lives to say it.

    Args:
        env: this process's DistEnv (a single process has no peers to lose).
        how_to_continue: a function giving what to do next (e.g. the checkpoint to resume from), called
            when it happens.
    """
    try:
        yield
    except RuntimeError as e:
        if not (env.distributed and _is_communication_failure(e)) or isinstance(e, PeerLost):
            raise
        # torchrun sends SIGTERM to the processes left: this one is stopping already, and must
        # live to say why (the default action would end it silently)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        next_step = how_to_continue()
        raise PeerLost(f'another process of this run stopped, so process {env.rank} of '
                       f'{env.world_size} stops too (its own output says why; here: '
                       f'{_reason(e)})' + (f'; {next_step}' if next_step else '')) from e


@contextlib.contextmanager
def process_group(timeout_minutes: float = 30) -> Iterator[DistEnv]:
    """This process's DistEnv (`setup`) inside; a collective failing because another process
    stopped raises PeerLost (`peers_watched`). On the way out the group is taken down, except
    after PeerLost: taking it down can wait on work the lost process will never do, and this
    one must live to say why (torchrun kills it a while after the other's end).

        with distributed.process_group() as env:
            train(cfg, env)
    """
    env = setup(timeout_minutes)
    lost = False
    try:
        with peers_watched(env):
            yield env
    except PeerLost:
        lost = True
        raise
    finally:
        if not lost:
            cleanup()


# PeerLost's exit status for util.cli.run_main, in every script that opens a process group
FAILURES = ((PeerLost, 'error', 1),)


def wrap_ddp(net: torch.nn.Module, env: DistEnv) -> torch.nn.parallel.DistributedDataParallel:
    """DistributedDataParallel around `net` (which stays reachable as the unwrapped model)."""
    from torch.nn.parallel import DistributedDataParallel
    # the support branch of the last SCCA block does not reach the loss: unused parameters
    return DistributedDataParallel(
        net, device_ids=[env.device.index] if env.device.type == 'cuda' else None,
        find_unused_parameters=True)


def cleanup() -> None:
    """Take the process group down, once its worker threads are done with the GIL."""
    if dist.is_available() and dist.is_initialized():
        # A Gloo worker thread frees each collective it ran, and freeing one takes the GIL (the
        # collective keeps the thread-local state it was launched with, which may hold Python
        # objects). A thread still waiting for the GIL when the interpreter exits is killed
        # inside a C++ destructor and the process aborts ('terminate called without an active
        # exception'): after complete runs, about one exit in three of two CPU processes whose
        # training had just dropped its DDP wrapper. Sleeping lets go of the GIL, and the thread
        # finishes.
        time.sleep(GIL_HANDOVER_SECONDS)
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes; returns the tensor (unchanged in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """The rows (N_i×... tensors, N_i may differ between processes) of every process,
    concatenated in rank order; `rows` itself in a single process."""
    if not is_distributed():
        return rows
    world_size = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    longest = int(max(counts))
    padded = rows.new_zeros((longest, *rows.shape[1:]))
    padded[:rows.shape[0]] = rows
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:int(n)] for g, n in zip(gathered, counts)])


def on_main_process(action: Callable[[], _T], env: DistEnv) -> _T | None:
    """`action()` on the main process only (e.g. claiming the run folder); if it fails, every
    process raises its error, so that none goes on alone. Returns the result (None on the other
    processes)."""
    result, error = None, None
    if env.is_main:
        try:
            result = action()
        except Exception as e:
            error = e
    if is_distributed():
        shared = [error]
        if error is not None:
            try:
                pickle.dumps(error)
            except Exception:
                shared = [OSError(str(error))]
        dist.broadcast_object_list(shared, src=0)
        error = error or shared[0]
    if error is not None:
        raise error
    return result


def all_reduce_mean(value: float, device: torch.device | str) -> float:
    """Mean of a Python number over processes."""
    t = torch.tensor(float(value), dtype=torch.float64, device=device)
    return all_reduce_sum(t).item() / (dist.get_world_size() if is_distributed() else 1)
