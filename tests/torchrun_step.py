"""One process of a torchrun world: validate_and_step (tests/helpers.py), rank 0 saving what it
got; tests/test_cuda.py compares it with one process (NCCL on GPUs, Gloo on the CPU).

    torchrun --nproc_per_node=N tests/torchrun_step.py CONFIG OUT   # the repository on PYTHONPATH
"""
import sys

import torch
import torch.distributed as dist

from helpers import validate_and_step
from util import distributed


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


if __name__ == '__main__':
    # Exact float32 on GPUs (no TF32 convolutions): the comparison is of the step, not of
    # TF32 rounding, which differs with the batch each process gets.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    step_and_save(*sys.argv[1:])
