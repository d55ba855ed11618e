"""Process-group set-up for `torchrun` (multi-process, multi-node) and the single-process fallback.

Launch: `torchrun --nproc_per_node G [--nnodes N --node_rank R --rdzv_endpoint HOST:PORT] script.py ...`.
torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them the job is one process and nothing here talks to
a process group. Backend: nccl on CUDA, gloo on CPU (the CPU tests use gloo with two processes).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from utils.config import UsageError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among `world_size` processes and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, prints progress and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` -> CUDA (this process's local GPU) when available, else CPU; `cpu`, `cuda`, `cuda:N` as given.

    Asking for CUDA on a machine without it, or for another device, is a UsageError (one `error:` line), not a
    silent fall-back to CPU.
    """
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
        if name == "cuda":
            name = f"cuda:{local_rank}"
        device = torch.device(name)
        torch.cuda.set_device(device)
        return device
    if name != "cpu":
        raise UsageError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def init_distributed(device: str = "auto", backend: str = "auto", timeout_min: float = 30.0) -> DistContext:
    """Join the process group torchrun describes in the environment, or run as a single process.

    Idempotent: a second call in an already-initialised process returns the same context.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if backend == "nccl" and torch_device.type != "cuda":
            raise ValueError("--dist-backend nccl needs CUDA devices; use gloo on CPU")
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_min),
        )
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=torch_device)


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op for a single process)."""
    if ctx.is_distributed and dist.is_initialized():
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (end of a run)."""
    if ctx.is_distributed and dist.is_initialized():
        barrier(ctx)
        dist.destroy_process_group()


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj` (picklable), indexed by rank; `[obj]` for a single process."""
    if not (ctx.is_distributed and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not (ctx.is_distributed and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum of `values` over all ranks (returns a new tensor; the input is untouched)."""
    total = values.detach().clone().to(ctx.device)
    if ctx.is_distributed and dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total
