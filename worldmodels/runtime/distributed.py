"""Data-parallel training over processes started by torchrun: the process group and the few collectives it needs.

    torchrun --nproc_per_node=N -m worldmodels.train [overrides]

Each process (rank) steps its own environments into its own replay and trains on its own batches; the
gradients of every update are averaged over the ranks before the optimiser step (an explicit all-reduce,
which keeps the optimiser and its clipping as they are), the return normaliser takes its percentiles over
every rank's imagined returns, and rank 0's initial weights are broadcast, so every rank holds the same
weights, optimiser state, slow critic and normaliser after each update. Without torchrun's environment
(`WORLD_SIZE` unset or 1) nothing here runs: no process group, world size 1.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (also across nodes with its
rendezvous flags); `process_group` reads them through `torch.distributed.init_process_group`. The backend
is gloo on CPU and NCCL on CUDA, where each rank takes the GPU of its LOCAL_RANK.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from worldmodels.runtime.errors import UserError

# Seeds of rank r are offset by r * RANK_SEED_STRIDE: far beyond the offsets one process uses for its other
# environments (evaluation +10000, rebuilt ones +1000 and +20000), so no two ranks draw the same stream.
RANK_SEED_STRIDE = 100_000

BUCKET_BYTES = 64 << 20  # gradients are averaged in flat buckets of at most this size: few collectives, bounded extra memory


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among `size` processes and its rank on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, evaluates and writes the checkpoint."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        """torchrun's RANK, WORLD_SIZE and LOCAL_RANK; without them a single process."""
        try:
            world = cls(*(int(os.environ.get(key, default)) for key, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"))))
        except ValueError as e:
            raise UserError(f"torchrun environment: {e}") from None
        if world.size < 1 or not 0 <= world.rank < world.size:
            raise UserError(f"torchrun environment: RANK={world.rank} does not fit WORLD_SIZE={world.size}")
        return world


def rank_seed(seed: int, rank: int) -> int:
    """The seed rank `rank` runs with (its environments, replay sampling, action noise); rank 0 keeps `seed`."""
    return seed + RANK_SEED_STRIDE * rank


@contextlib.contextmanager
def process_group(device: str) -> Iterator[World]:
    """The world of this process for the length of a run: under torchrun (WORLD_SIZE > 1) a process group,
    initialised from the environment and destroyed at the end (no barrier: a rank that ends early, by an
    error, does not wait for the others); otherwise world size 1 and no process group."""
    world = World.from_env()
    if world.size == 1 or dist.is_initialized():  # alone, or inside a group its caller made and keeps
        yield world
        return
    if not dist.is_available():
        raise UserError("torchrun started several processes, but this torch build has no torch.distributed")
    cuda = device.startswith("cuda")
    if not (cuda or device == "cpu"):
        raise UserError(f"data-parallel training runs on device=cpu or device=cuda, not {device}")
    if cuda:
        torch.cuda.set_device(world.local_rank)  # `cuda` then means this rank's GPU
    try:
        dist.init_process_group("nccl" if cuda else "gloo")
    except (ValueError, RuntimeError) as e:
        raise UserError(f"cannot join the torchrun process group: {str(e).splitlines()[0]}") from None
    try:
        yield world
    finally:
        dist.destroy_process_group()


def _collective(collective: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run a collective; a rank that died (kill -9, a crash) makes it fail on the others: one line, not a traceback."""
    try:
        return collective(*args, **kwargs)
    except RuntimeError as e:  # torch.distributed.DistBackendError and gloo's connection errors
        raise UserError(f"another process of this distributed run stopped ({str(e).splitlines()[0]}); "
                        "its last checkpoint is kept, rerun the same command to resume") from None


def _buckets(tensors: Sequence[torch.Tensor], limit: int) -> Iterator[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (size + t.nbytes > limit or t.dtype != bucket[0].dtype or t.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.nbytes
    if bucket:
        yield bucket


@torch.no_grad()
def average_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over the ranks (gradients before the optimiser step).

    Every rank must pass the same tensors (shapes, dtypes, order). The sums are identical on every rank, so
    the averages are too."""
    world = dist.get_world_size()
    for bucket in _buckets(tensors, BUCKET_BYTES):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        _collective(dist.all_reduce, flat)
        flat.div_(world)
        for t, part in zip(bucket, flat.split([t.numel() for t in bucket])):
            t.copy_(part.view_as(t))


@torch.no_grad()
def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor, in place, with rank `src`'s (the initial weights)."""
    for bucket in _buckets(tensors, BUCKET_BYTES):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        _collective(dist.broadcast, flat, src)
        for t, part in zip(bucket, flat.split([t.numel() for t in bucket])):
            t.copy_(part.view_as(t))


@torch.no_grad()
def gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` (same shape on each), concatenated along the first axis in rank order."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    _collective(dist.all_gather, parts, tensor.contiguous())
    return torch.cat(parts)


def data_parallel(agent: Any) -> None:
    """Make every update of `agent` (worldmodels/agent/agent.py) one update of the global batch: its gradients are
    averaged over the ranks before the optimiser clips them, the update is skipped on every rank where any rank's
    loss or gradient is not finite, and the return percentiles are taken over every rank's returns. All ranks then
    stay identical. Applied through the agent's hooks, so the agent knows nothing of torchrun."""

    def grad_hook(grads: list[torch.Tensor | None], finite: torch.Tensor) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        present = [g for g in grads if g is not None]
        # After the gradients every one is final (the deferred ones of the observe loop included) and the optimiser has
        # not clipped yet: the average is what one process would get from the global batch.
        average_(present)
        flag = finite.to(torch.float32).reshape(1)
        _collective(dist.all_reduce, flag, op=dist.ReduceOp.MIN)
        norm = torch.stack(torch._foreach_norm(present)).sum()
        return grads, (flag[0] > 0) & torch.isfinite(norm)

    agent.grad_hook = grad_hook
    agent.returns_hook = gather_cat


def all_min(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """The elementwise minimum of `values` over the ranks (a maximum is the minimum of the negatives).

    Values are exchanged as float64, so counts stay exact up to 2**53."""
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    _collective(dist.all_reduce, tensor, op=dist.ReduceOp.MIN)
    return tensor.tolist()


class Agreement(NamedTuple):
    """What every rank acts on in one loop iteration under torchrun (the lockstep)."""

    step: int = 0  # the fewest env steps any rank has taken: the run ends when every rank has taken run.steps
    stored: int = 0  # the fewest items any rank has stored: every rank owes the same updates at the train ratio
    ready: bool = False  # every rank's replay can give a batch
    save: bool = False  # rank 0 asks for a checkpoint: every rank saves in this iteration
    stop: bool = False  # a signal reached some rank: every rank saves and stops


def agree(step: int, stored: int, ready: bool, save: bool, stop: bool, device: torch.device | str = "cpu") -> Agreement:
    """One all-reduce that gives every rank the same Agreement (only rank 0 should pass `save`)."""
    low = all_min([step, stored, ready, -save, -stop], device)
    return Agreement(int(low[0]), int(low[1]), low[2] > 0, low[3] < 0, low[4] < 0)


def barrier(device: torch.device | str = "cpu") -> None:
    """Wait until every rank gets here (an all-reduce, so it works alike on gloo and NCCL)."""
    all_min([0.0], device)
