"""The processes and devices of a training run, and their random states.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment)
:func:`~tractvq.training.train` initialises :mod:`torch.distributed` (gloo on the CPU, NCCL on
CUDA, rank ``r`` on ``cuda:LOCAL_RANK``), wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel` and gives each rank its contiguous slice
of every global batch of ``batch_size`` groups (which must divide evenly). Only rank 0
validates, writes files and shows progress. Quantizer state that changes outside autograd
stays identical on all ranks: DDP broadcasts buffers (EMA codebooks, usage counters) from
rank 0 before each forward, and after each step the trainer broadcasts the quantizer's
parameters from rank 0 (:func:`broadcast_parameters`; dead-code replacement edits the
codebook in place, from each rank's own latents). The price is that such updates see rank
0's slice of the batch only. Each rank draws its own quantizer noise (seeded by
``(seed, rank)``, :func:`rank_seed`).

Every function here that takes a :class:`Processes` must be called by all ranks at the same
point.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from tractvq.training.config import DEVICES

__all__ = [
    "Processes",
    "agree",
    "barrier",
    "broadcast_parameters",
    "environment_processes",
    "forked_rng",
    "gathered_rng_states",
    "process_group",
    "rank_seed",
    "resolve_device",
    "rng_state",
    "set_rng_state",
    "summed",
]

_RANK_SEED_STREAM = 2  # keeps the per-rank torch seeds apart from tractvq.data's streams


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes.

    Parameters
    ----------
    rank : int
        Rank of this process.
    world_size : int
        Number of processes.
    local_rank : int
        Rank on this node (its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that validates, writes and reports)."""
        return self.rank == 0


def environment_processes() -> Processes:
    """The torchrun layout from the environment (one process without it)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return Processes()
    return Processes(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``name``.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda"} or "cuda:N"
        ``auto``: CUDA if available, else the CPU.
    local_rank : int, optional
        Under torchrun, the process's GPU on its node (``cuda`` becomes ``cuda:local_rank``).

    Raises
    ------
    ValueError
        If CUDA is asked for and not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return torch.device(name if ":" in name else f"cuda:{local_rank}")


@contextmanager
def process_group(processes: Processes, device: torch.device) -> Iterator[None]:
    """Join the process group for the duration (gloo on the CPU, NCCL on CUDA), unless there
    is one process or the group already exists; leave it on the way out."""
    import torch.distributed as dist

    started = processes.distributed and not dist.is_initialized()
    if started:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def agree(flag: bool, processes: Processes, device: torch.device) -> bool:
    """Whether any rank raised ``flag``."""
    if not processes.distributed:
        return flag
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def summed(values: torch.Tensor, processes: Processes, device: torch.device) -> torch.Tensor:
    """``values`` (a CPU tensor) summed over the ranks, on the CPU."""
    if not processes.distributed:
        return values
    import torch.distributed as dist

    values = values.to(device)
    dist.all_reduce(values)
    return values.cpu()


def broadcast_parameters(module: torch.nn.Module, processes: Processes) -> None:
    """Give every rank rank 0's values of ``module``'s parameters."""
    if not processes.distributed:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in module.parameters():
            dist.broadcast(tensor.data, src=0)


def barrier(processes: Processes) -> None:
    """Wait for every rank."""
    if processes.distributed:
        import torch.distributed as dist

        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of ``rank`` for a run seeded ``seed`` (quantizer noise)."""
    return int(np.random.SeedSequence((seed, _RANK_SEED_STREAM, rank)).generate_state(1)[0])


def rng_state(device: torch.device) -> dict:
    """This process's torch random states: ``cpu``, and ``cuda`` on a CUDA device."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore :func:`rng_state`'s output."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gathered_rng_states(processes: Processes, device: torch.device) -> list[dict]:
    """Every rank's :func:`rng_state`, in rank order, on the CPU."""
    if not processes.distributed:
        return [rng_state(device)]
    import torch.distributed as dist

    states = [None] * processes.world_size
    dist.all_gather_object(states, rng_state(device))
    return [{key: value.cpu() for key, value in state.items()} for state in states]


def forked_rng(device: torch.device):
    """A context in which the torch random states of the CPU and ``device`` may change: they
    are restored on the way out (:func:`torch.random.fork_rng`)."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type)
