"""Batches under torchrun: each rank takes its own shard of the studies, rank 0 gathers every outcome.

Every rank discovers the same study list (discovery is deterministic), keeps studies `rank, rank + world, ...`, and
writes their outputs itself. Only the outcomes (small dictionaries) travel, over a gloo process group, so the output
folder may be local to each node; rank 0 writes the merged summary.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from medmrcnn.batch.summary import StudyOutcome

log = logging.getLogger(__name__)
T = TypeVar("T")

# Ranks finish their shards at different times; the gather must wait for the slowest, not time out after minutes.
GATHER_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Shard:
    """This process's part of a batch: `rank` of `world_size` processes, `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """The shard torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE (1 process without it)."""
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                   int(env.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def distributed(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every `world_size`-th one starting at `rank`."""
        return list(items[self.rank::self.world_size])

    def device(self, device: str) -> str:
        """The device this rank uses: "auto" / "cuda" become its own GPU (cuda:LOCAL_RANK) when GPUs are present."""
        if self.distributed and device in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return device

    def share_cpu_threads(self) -> None:
        """Give each process on a node its share of the CPU cores (torch would start one thread per core in each)."""
        if self.local_world_size > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.local_world_size))


def gather_outcomes(shard: Shard, outcomes: list[StudyOutcome], order: Sequence[str]) -> list[StudyOutcome] | None:
    """Every rank's outcomes on rank 0, ordered by study name as in `order`; None on the other ranks.

    Joins (and afterwards leaves) a gloo process group when none exists; without torchrun it returns `outcomes`.
    """
    if not shard.distributed:
        return outcomes
    import torch.distributed as dist

    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world_size, timeout=GATHER_TIMEOUT)
        group = None
    else:  # an existing (possibly NCCL) group: gather over a gloo side group so objects stay on the CPU
        group = dist.new_group(backend="gloo", timeout=GATHER_TIMEOUT)
    try:
        gathered: list[list[dict]] | None = [[] for _ in range(shard.world_size)] if shard.rank == 0 else None
        dist.gather_object([o.to_dict() for o in outcomes], gathered, dst=0, group=group)
    finally:
        if own_group:
            dist.destroy_process_group()
    if gathered is None:
        return None
    by_name = {d["name"]: StudyOutcome.from_dict(d) for part in gathered for d in part}
    log.info("rank 0 gathered %d outcomes from %d ranks", len(by_name), shard.world_size)
    return [by_name[name] for name in order if name in by_name]
