"""Several processes (torchrun / accelerate launch, one or several machines): who am I, and how results meet.

Inference and validation both deal out the same length-sorted batches with ``shard`` and bring the results
together over torch.distributed; nothing here needs a shared filesystem. With one process every function
is a no-op.
"""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

T = TypeVar("T")


def distributed_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) as set by torchrun / accelerate launch; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def process_group():
    """torch.distributed, initialised over gloo when nobody did it yet (CPU tensors and Python objects, with or
    without GPUs, across nodes); the Trainer initialises its own backend first when it trains."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """This process's share: every world-th item starting at ``rank`` (whole batches, in order)."""
    return list(items[rank::world])


def agree_on(value, world: int):
    """Rank 0's value on every rank (the batch size; whether the run may start at all)."""
    if world == 1:
        return value
    box = [value]
    process_group().broadcast_object_list(box, src=0)
    return box[0]


def gather_to_first(value, world: int) -> list | None:
    """Every rank's ``value``, in rank order, on rank 0 (None on the others)."""
    if world == 1:
        return [value]
    dist = process_group()
    parts = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(value, parts, dst=0)
    return parts


def gather_to_all(value, world: int) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if world == 1:
        return [value]
    parts = [None] * world
    process_group().all_gather_object(parts, value)
    return parts
