"""PyTorch DistributedDataParallel set-up for runs launched with ``torchrun``.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; when WORLD_SIZE > 1 we join the process group
(NCCL on CUDA, gloo on CPU), each rank trains on its shard of every epoch's permutation, gradients are
averaged by DDP, and only rank 0 writes to the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistributedContext:
    """Join the process group if launched by torchrun with more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed(context: DistributedContext) -> None:
    """Leave the process group together: the barrier keeps a rank from tearing gloo down while another is
    still in a collective (seen as 'terminate called without an active exception' under load)."""
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    if context.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` without DDP."""
    if not context.enabled:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_flag(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """Rank 0's decision (e.g. 'the wall-clock budget is spent'), so all ranks stop at the same step."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def check_replicas_identical(module: torch.nn.Module, context: DistributedContext, device: torch.device) -> None:
    """Fail loudly if DDP replicas diverged (they must hold identical weights after every step)."""
    if not context.enabled:
        return
    with torch.no_grad():
        checksum = torch.stack([p.double().sum() for p in module.parameters()]).sum().reshape(1).to(device)
        gathered = [torch.zeros_like(checksum) for _ in range(context.world_size)]
        dist.all_gather(gathered, checksum)
    values = [float(g.item()) for g in gathered]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"DDP replicas diverged: parameter checksums per rank {values}")
