"""The preparation on the cluster: Ray actors that hold the base model on the trials' resources
and make the pseudo-labels and the zero-shot screen before the first trial.

As many workers as trials can run at once (`resources.cpus` / `gpus` each, so on a GPU node
each lands on a GPU of its own), no more than there is work for. The base model goes into Ray's
object store once and every worker loads it from there; the work is handed out a shard (or a
batch of students) at a time through Ray's `ActorPool`, and the workers end before the trials
start, so they never hold a trial's slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from search.space.config import SweepConfig
from trainables.config import DecodingConfig, TrialConfig
from trainables.probe import TrialProbe
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
        self.base: Any = None  # the base model in Ray's object store, once started
        self.start_seconds = 0.0  # what starting them took: Ray workers, imports, the model

    def start(self, base: PackedModel, work: int) -> int:
        """Have as many workers as trials may run at once, at most `work`, each holding
        `base`; how many run. Once started, they stay until `close`; a later call with more
        work (the labels after the estimate's one probe worker) adds the ones missing."""
        import ray

        from trainables.preparation import BaseModelWorker

        self.wait_for_ray()
        count = max(1, min(work, trial_slots(self.config, ray.cluster_resources())))
        if count <= len(self.actors):
            return len(self.actors)
        resources = self.config.resources
        threads = max(1, int(resources.cpus))
        remote = ray.remote(BaseModelWorker).options(
            num_cpus=resources.cpus, num_gpus=resources.gpus
        )
        began = time.perf_counter()
        if self.base is None:
            self.base = ray.put(base)
        added = [remote.remote(self.base, threads) for _ in range(count - len(self.actors))]
        self.places += ray.get([actor.where.remote() for actor in added])
        self.actors += added
        self.start_seconds += time.perf_counter() - began
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

    def probe(
        self,
        base: PackedModel,
        students: Sequence[TrialConfig],
        data: TokenizedData,
        steps: int,
        pairs: int,
    ) -> list[TrialProbe]:
        """What each student costs (`trainables.probe`), measured by one worker in turn: a
        trial runs on one worker's resources, so one worker shows what one trial costs.

        Raises:
            DoesNotFitError: a student does not fit even at a micro-batch of one.
        """
        import ray

        self.start(base, 1)
        sent, decoding = ray.put(data), self.config.decoding
        return [
            self._trial_on_first(
                "probe", self.base, student, sent, decoding, steps, pairs, *self._trial_fit()
            )
            for student in students
        ]

    def gold_probe(
        self, full: TrialConfig, base: PackedModel, data: TokenizedData, steps: int
    ) -> dict[str, float]:
        """The full model fine-tuned briefly on the gold summaries and scored, on one worker
        (`trainables.teacher.gold_probe`).

        Raises:
            DoesNotFitError: the full model does not fit even at a micro-batch of one.
        """
        self.start(base, 1)
        job = (self.base, full, data, self.config.decoding, steps, *self._trial_fit())
        return self._trial_on_first("gold_probe", *job)

    def _trial_fit(self) -> tuple[float, int | None]:
        """What a trial has of its device: the share of a GPU (all of a CPU) and the bytes
        its step may use (`resources.memory_gib`; None: that share)."""
        return min(1.0, self.config.resources.gpus) or 1.0, self.config.resources.memory_limit

    def _trial_on_first(self, method: str, *args: Any) -> Any:
        """The first worker's `method` run on `args`, as a trial of the sweep would run it:
        its error is the worker's own, without Ray's wrapping."""
        import ray

        try:
            return ray.get(getattr(self.actors[0], method).remote(*args))
        except ray.exceptions.RayTaskError as err:
            raise err.cause from None

    def label_rate(self, base: PackedModel, sources: Sequence[np.ndarray]) -> float:
        """Sources per second one worker makes pseudo-labels at, timed on `sources`."""
        import ray

        self.start(base, 1)
        began = time.perf_counter()
        ray.get(self.actors[0].pseudo_label_shard.remote(0, list(sources), self.config.decoding))
        return len(sources) / (time.perf_counter() - began)

    def close(self) -> None:
        """End the workers: their resources go back to the trials."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors, self.places = [], []

    def _pool(self) -> Any:
        from ray.util import ActorPool

        return ActorPool(self.actors)
