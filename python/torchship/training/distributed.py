"""Where a training process runs: device choice and, under ``torchrun``, its place in the process group.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; a plain ``python``/``torchship`` run sets
none of them and trains alone. The same training loop serves both: it asks
this module for the device, sums its counts through ``all_reduce_sum`` and
lets ``is_main`` decide who writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # this module started the process group and must end it

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` takes CUDA when it is visible; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if choice not in DEVICES:
        raise ValueError(f"unknown device {choice!r}: use one of {', '.join(DEVICES)}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU (use --device auto or cpu)")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device_choice: str) -> Context:
    """Joins the ``torchrun`` process group when there is one (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if world_size <= 1:
        return Context(0, 1, 0, device, owns_group=False)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
        raise RuntimeError(
            f"process group is rank {dist.get_rank()} of {dist.get_world_size()}, "
            f"but RANK/WORLD_SIZE say {rank} of {world_size}"
        )
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # N processes on one machine share its cores; without this each would start one thread per core.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
    return Context(rank, world_size, local_rank, device, owns_group=owns)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sums ``tensor`` over every process (in place) and returns it; a no-op when training alone."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_buffers(model: nn.Module, ctx: Context) -> None:
    """Gives every process rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts them at the start of each forward, so after the last training
    step of an epoch every process still holds the statistics of its own last
    batch; evaluating or saving before the next forward needs this.
    """
    if not ctx.distributed:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def check_replicas_equal(model: nn.Module, ctx: Context) -> None:
    """Raises unless every process holds bit-identical weights (what DDP promises; checked, not assumed)."""
    if not ctx.distributed:
        return
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in model.state_dict().values()])
    low, high = flat.clone(), flat.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        worst = float((high - low).abs().max())
        raise RuntimeError(f"replicas diverged: weights differ between processes by up to {worst:g}")
