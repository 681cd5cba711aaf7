"""The preparation on the cluster: Ray actors that hold the base model on the trials' resources
and make the pseudo-labels and the zero-shot screen before the first trial.

As many workers as trials can run at once (`resources.cpus` / `gpus` each, so on a GPU node
each lands on a GPU of its own), no more than there is work for. The base model goes into Ray's
object store once and every worker loads it from there; the work is handed out a shard (or a
batch of students) at a time through Ray's `ActorPool`, and the workers end before the trials
start, so they never hold a trial's slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from search.space.config import SweepConfig
from trainables.config import DecodingConfig
from trainables.screen import Layers, ZeroShotScore
from trainables.tokens import TokenizedData
from trainables.trial import PackedModel

STUDENTS_PER_TASK = 4  # students a worker scores per call: small, so the workers finish together


def trial_slots(config: SweepConfig, cluster: dict[str, float]) -> int:
    """How many trials the cluster can run at once with the configured resources."""
    slots = cluster.get("CPU", 1) // config.resources.cpus
    if config.resources.gpus:
        slots = min(slots, cluster.get("GPU", 0) // config.resources.gpus)
    if config.max_concurrent:
        slots = min(slots, config.max_concurrent)
    return max(1, int(slots))


class BaseWorkers:
    """Actors holding the base model, started on first use and ended by `close`.

    Args:
        config: The sweep's configuration (its trials' resources and concurrency).
        wait_for_ray: Called before the first actor starts (Ray may still be starting).
    """

    def __init__(
        self, config: SweepConfig, wait_for_ray: Callable[[], None] = lambda: None
    ) -> None:
        self.config = config
        self.wait_for_ray = wait_for_ray
        self.actors: list[Any] = []
        self.places: list[dict[str, str]] = []

    def start(self, base: PackedModel, work: int) -> int:
        """Start as many workers as trials may run at once, at most `work`, each holding
        `base`; how many run. Once started, they stay until `close`."""
        if self.actors:
            return len(self.actors)
        import ray

        from trainables.preparation import BaseModelWorker

        self.wait_for_ray()
        count = max(1, min(work, trial_slots(self.config, ray.cluster_resources())))
        resources = self.config.resources
        threads = max(1, int(resources.cpus))
        remote = ray.remote(BaseModelWorker).options(
            num_cpus=resources.cpus, num_gpus=resources.gpus
        )
        shared = ray.put(base)
        self.actors = [remote.remote(shared, threads) for _ in range(count)]
        self.places = ray.get([actor.where.remote() for actor in self.actors])
        return count

    def describe(self) -> str:
        """Where the work ran, e.g. "on 2 workers (cpu)" or "on 8 workers (cuda:0)"."""
        devices = sorted({place["device"] for place in self.places})
        nodes = {place["node"] for place in self.places}
        on_hosts = f" on {len(nodes)} nodes" if len(nodes) > 1 else ""
        count = len(self.actors)
        return f"on {count} worker{'s' * (count != 1)} ({', '.join(devices)}){on_hosts}"

    def make_shards(self, base: PackedModel, decoding: DecodingConfig) -> Callable[..., None]:
        """A `trainables.pseudo.MakeShards` that hands the shards out to the workers."""

        def make(
            shards: dict[int, list[np.ndarray]], on_shard: Callable[[int, list[str]], None]
        ) -> None:
            if not shards:
                return
            self.start(base, len(shards))
            pool = self._pool()
            # The longest shards first, so that no worker is left with a long one at the end.
            by_size = sorted(shards.items(), key=lambda item: -sum(map(len, item[1])))
            for index, rows in by_size:
                pool.submit(
                    lambda actor, job: actor.pseudo_label_shard.remote(*job),
                    (index, rows, decoding),
                )
            while pool.has_next():
                on_shard(*pool.get_next_unordered())

        return make

    def zero_shot(
        self, base: PackedModel, students: Sequence[Layers], head: TokenizedData
    ) -> list[ZeroShotScore]:
        """Every student scored untrained by the workers, in the order given."""
        import ray

        batches = [
            list(students[first : first + STUDENTS_PER_TASK])
            for first in range(0, len(students), STUDENTS_PER_TASK)
        ]
        self.start(base, len(batches))
        pairs = ray.put(head)
        scored = self._pool().map(lambda actor, job: actor.zero_shot.remote(job, pairs), batches)
        return [score for batch in scored for score in batch]

    def close(self) -> None:
        """End the workers: their resources go back to the trials."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def _pool(self) -> Any:
        from ray.util import ActorPool

        return ActorPool(self.actors)
