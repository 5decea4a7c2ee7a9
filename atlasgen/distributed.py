"""Which share of the work this process does: torchrun / SLURM ranks, or `--shard i/n`."""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from atlasgen.errors import AtlasError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BARRIER_HOURS = 48  # the longest a rank waits for the others at the barrier


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    process_group: bool = False  # ranks synchronize through torch.distributed

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_environment() -> Ranks:
    """Ranks from torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or SLURM (SLURM_PROCID, ...)."""
    env = os.environ
    if "WORLD_SIZE" in env and int(env["WORLD_SIZE"]) > 1:
        return Ranks(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), True)
    if "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1 and "SLURM_PROCID" in env:
        return Ranks(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)), True)
    return Ranks()


def processes_per_gpu() -> int:
    """How many of torchrun's local processes share each GPU (two ranks on one GPU: 2)."""
    import torch

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    gpus = max(torch.cuda.device_count(), 1)
    return max(1, -(-local // gpus))


def parse_shard(text: str) -> Ranks:
    """`--shard i/n`: this process does share i of n (0-based), with no process group."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise AtlasError(f"--shard {text!r}: expected i/n such as 0/4 (share 0 of 4)") from None
    if count < 1 or not 0 <= index < count:
        raise AtlasError(f"--shard {text!r}: i must be in 0..n-1")
    return Ranks(index, count, 0, False)


def device_for(requested: str, ranks: Ranks) -> str:
    """Each rank of a process group takes its own GPU."""
    import torch

    if ranks.process_group and requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank % torch.cuda.device_count()}"
    return requested


def init(ranks: Ranks, device: torch.device) -> None:
    import torch.distributed

    if not ranks.process_group or torch.distributed.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ:  # under srun without torchrun
        os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.setdefault("RANK", str(ranks.rank))
        os.environ.setdefault("WORLD_SIZE", str(ranks.world))
    # The ranks only wait for each other (one barrier before rendering); they exchange no tensors.
    # Gloo does that on any device and, unlike NCCL, for ranks sharing one GPU. A rank may wait
    # for the slowest one for hours, hence the long timeout.
    backend = "gloo"
    torch.distributed.init_process_group(backend=backend, rank=ranks.rank, world_size=ranks.world,
                                         timeout=datetime.timedelta(hours=BARRIER_HOURS))
    log.info("rank %d of %d joined the process group (%s)", ranks.rank, ranks.world, backend)


def barrier(ranks: Ranks) -> None:
    if not ranks.process_group:
        return
    import torch.distributed

    if ranks.process_group and torch.distributed.is_initialized():
        torch.distributed.barrier()


def finish(ranks: Ranks) -> None:
    if not ranks.process_group:
        return
    import torch.distributed

    if ranks.process_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
