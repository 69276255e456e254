"""Data-parallel training under `torchrun`: one process per core or GPU, gradients averaged by
DistributedDataParallel (gloo on CPU, NCCL on GPU). A plain `python -m zoo train` is a world of one
without a process group; under `torchrun --nproc_per_node 1` the same DDP path runs with one process,
so a one-GPU machine exercises NCCL too."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    group: bool = False  # joined a torch.distributed process group (under torchrun, even a world of one)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.group:
            dist.barrier()


def launched() -> bool:
    """Whether `torchrun` started this process (it sets these for `init_process_group`'s env:// rendezvous)."""
    return all(k in os.environ for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"))


def stores() -> bool:
    """Whether this process is the one that stores what a run makes: rank 0 under `torchrun`, else always.
    Readable before `init` (the process group), from the environment torchrun sets."""
    return not launched() or os.environ["RANK"] == "0"


def init(device: str | None) -> World:
    """Join the process group `torchrun` describes in the environment (once); a world of one otherwise."""
    if not launched():
        return World()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device or "auto") != "cpu"
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local, group=True)


def device_for(world: World, device: str | None) -> str | None:
    """Each process's own GPU under torchrun (cuda:LOCAL_RANK); else the device asked for."""
    if world.group and torch.cuda.is_available() and (device or "auto") != "cpu":
        return f"cuda:{world.local_rank}"
    return device if not world.group else (device or "cpu")


def shard(indices: torch.Tensor, world: World) -> torch.Tensor:
    """This process's equal share of `indices` (the tail that does not divide evenly is dropped)."""
    if world.size == 1:
        return indices
    usable = len(indices) - len(indices) % world.size
    return indices[world.rank:usable:world.size]


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    if not world.group:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
