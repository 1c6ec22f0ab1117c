"""Multi-process training under ``torchrun``: process-group setup and small collectives.

When ``WORLD_SIZE > 1`` is in the environment (as ``torchrun`` sets it), :func:`init_from_env`
joins the process group: ``gloo`` on CPU, ``nccl`` on CUDA (each rank on ``cuda:LOCAL_RANK``).
Only rank 0 writes to the results store and saves checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a ``torchrun`` job (:func:`init_from_env` returns it).

    The default is the single-process context (no process group); only rank 0 (``is_main``) writes
    to the results store and saves checkpoints.

    Attributes:
        rank: global rank; default 0.
        world_size: number of processes; default 1.
        local_rank: rank on this host (the CUDA device index); default 0.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA); default None (not distributed).
        enabled: ``world_size > 1``.
        is_main: ``rank == 0``.

    Example:
        >>> ctx = DistContext()
        >>> ctx.enabled, ctx.is_main
        (False, True)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment variables (if any)."""
    world = env_world_size()
    if world <= 1 or not dist.is_available():
        return DistContext()
    rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local, backend)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
