"""Mini-batches straight from in-memory tensors.

A ``DataLoader`` with per-sample ``__getitem__`` and ``collate`` costs more than the model on small
images; indexing the dataset's tensors with a permutation does the same work in one gather.
The permutation of an epoch is a pure function of its seed, so a resumed run sees the same batches.
Under ``torch.distributed`` each rank takes an interleaved shard of the same permutation (padded
by wrapping around so every rank gets the same number of batches, as ``DistributedSampler`` does).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from trustlab.data.datasets import ArrayDataset
from trustlab.utils.seed import generator


def epoch_indices(
    n: int,
    shuffle: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Indices this rank visits in one epoch (a seeded permutation when ``shuffle``)."""
    order = torch.randperm(n, generator=generator(seed)) if shuffle else torch.arange(n)
    if world_size > 1:
        total = math.ceil(n / world_size) * world_size
        if total > n:  # wrap around as often as needed (n may be smaller than world_size)
            order = order.repeat(math.ceil(total / n))[:total]
        order = order[rank::world_size]
    return order


def iterate_batches(
    data: ArrayDataset,
    batch_size: int,
    indices: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches on ``device`` following ``indices`` (default: in order)."""
    order = torch.arange(len(data)) if indices is None else indices
    n = order.numel()
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    non_blocking = torch.device(device).type == "cuda"
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield (
            data.x[idx].to(device, non_blocking=non_blocking),
            data.y[idx].to(device, non_blocking=non_blocking),
        )


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)
