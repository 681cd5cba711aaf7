"""What a sweep will cost before it is paid (`shrink-sweep plan`).

The model and data are loaded as `run` loads them (pseudo-labels read where made before, never
generated here), then one worker of the sweep's resources probes the largest and the smallest
student the space allows (`trainables.probe`: a few optimizer steps, a short evaluation in the
sweep's and in the rungs' decoding, the peak of a step on the longest batch). From that:

- a trial's time, linear in its student's parameters between the two probes (the space's
  students on average; the `first:` points at their own size): a worker's start, the
  student's set-up, its steps, its rung evaluations and its final evaluation;
- asha's stops: the sweep's own halving rule (`search.strategy.halving`) replayed on random
  results, the `first:` points judged but never stopped, says how far a trial gets on average;
- the wall time: the preparation (the teacher's own summaries of the evaluation split and, for
  `train.targets: auto`, the full model's short gold fine-tune; the pseudo-labels still to
  make at the rate one worker was timed at, on as many workers as trials run at once; the
  screen), then the trials handed to the trial slots in the order they start.

A space whose largest student does not fit its device even at a micro-batch of one with
gradient checkpointing is refused (`PlanError`).
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.console import quiet_libraries, to_root
from search.driver.cluster import check_ray_address, cluster_refused
from search.driver.preflight import (
    Prepared,
    check_inputs,
    check_resources,
    chooses_targets,
    gold_probe_trial,
    needs_pseudo_labels,
    prepare,
)
from search.driver.progress import duration
from search.driver.workers import BaseWorkers, trial_slots
from search.record.paths import SweepPaths
from search.space.config import AUTO_TARGETS, ConfigError, SweepConfig
from search.space.params import Fixed, FloatRange, IntRange, Param
from search.space.suggest import InfeasibleError, plan, typical_values
from search.strategy.halving import SuccessiveHalving, is_first_point, rung_config
from search.strategy.screen import MOST_PICKS, describe_student, screen_candidates
from trainables.config import RungConfig, TrialConfig
from trainables.memory import size_text
from trainables.probe import TrialProbe

PROBE_STEPS = 5  # optimizer steps timed, after a first one
SIZE_METRICS = ("params", "params_non_embedding", "size_mb")  # objectives set by the student
PROBE_PAIRS = 16  # evaluation pairs timed
LABEL_PROBE_SOURCES = 16  # sources pseudo-labeled to time the labeling
HALVING_RUNS = 200  # replays of the halving rule on random results
SEED = 0


class PlanError(ConfigError):
    """The space cannot run: its largest student does not fit its device."""

    def __init__(self, message: str) -> None:
        super().__init__([message], source="the space")


@dataclass(frozen=True)
class SweepPlan:
    """A sweep's estimated cost and what it was estimated from."""

    largest: tuple[str, TrialProbe]  # e.g. "6+6 sft", and its probe
    smallest: tuple[str, TrialProbe]
    needs_checkpointing: bool  # the largest fits only with gradient checkpointing
    slots: int  # trials at once
    prepare_seconds: float  # model and data, Ray (measured); labels and screen (estimated)
    labels_to_make: int
    trial_seconds: tuple[float, ...]  # each trial's expected time, in the order they start
    budget_share: float  # of its steps a non-`first:` trial runs on average (1: no stops)
    wall_seconds: float
    device_memory: int  # bytes of the device a trial's share is planned against

    @property
    def trial_hours(self) -> float:
        return sum(self.trial_seconds) / 3600

    @property
    def trials_per_device(self) -> int:
        return int(self.device_memory // max(self.largest[1].peak_bytes, 1))


def plan_sweep(
    config: SweepConfig,
    address: str | None = None,
    store: Path = Path("mlflow"),
) -> SweepPlan:
    """Load the model and data as `run` does (pseudo-labels read, never made) and estimate the
    sweep (`estimate_sweep`).

    Args:
        config: The sweep.
        address: A Ray cluster to probe on; None: a local Ray.
        store: Where `run` keeps pseudo-labels made before (`<store>/pseudo-labels`).

    Raises:
        ConfigError, DataError, ModelError: bad input, as `run` would say it.
        PlanError: the largest student does not fit even at a micro-batch of one with gradient
            checkpointing.
    """

    quiet_libraries()  # their messages are held, and dropped: a plan writes nothing
    if address:
        check_ray_address(address)
    else:
        check_resources(config)
    inputs = check_inputs(config)
    try:
        _, ray_seconds = _timed(_start_ray, address)
    except ConnectionError as err:
        if not address:
            raise
        raise cluster_refused(address, err) from None
    prepared = prepare(config, inputs, SweepPaths(store).pseudo_labels, read_only=True)
    workers = BaseWorkers(config)
    try:
        return estimate_sweep(config, prepared, workers, ray_seconds)
    finally:
        workers.close()


def estimate_sweep(
    config: SweepConfig,
    prepared: Prepared,
    workers: BaseWorkers,
    ray_seconds: float,
) -> SweepPlan:
    """Probe the largest and the smallest student on one of `workers` and estimate the sweep
    whose model and data are `prepared`: the pseudo-labels it has not got yet and its screen
    when it has none yet (`run` has both by then) are estimated too.

    Raises:
        PlanError: the largest student does not fit even at a micro-batch of one with gradient
            checkpointing.
    """
    import ray

    workers.start(prepared.base, 1)  # after Ray, which may still be starting
    slots = trial_slots(config, ray.cluster_resources())
    labels_missing = needs_pseudo_labels(config) and prepared.data.pseudo_labels is None
    students = student_configs(config, prepared, gold=labels_missing)
    probes, checkpointed = _probe(workers, prepared, students)
    to_make = _labels_to_make(config, prepared) if labels_missing else 0
    preparation = ray_seconds + prepared.seconds + prepared.screen_seconds
    preparation += _teacher_seconds(config, prepared, probes[0], slots)
    if to_make:
        sources = list(prepared.data.train_input_ids.head(LABEL_PROBE_SOURCES))
        preparation += to_make / (workers.label_rate(prepared.base, sources) * slots)
    if not prepared.screen:
        preparation += _screen_seconds(config, prepared, workers, students, slots)
    # A trial starts a worker of its own: the imports and the model's load, as timed here.
    started = workers.start_seconds
    probes = [dataclasses.replace(p, start_seconds=p.start_seconds + started) for p in probes]
    durations, share = trial_seconds(config, prepared, students[0], probes)
    return SweepPlan(
        largest=(_name(students[0]), probes[0]),
        smallest=(_name(students[1]), probes[1]),
        needs_checkpointing=checkpointed,
        slots=slots,
        prepare_seconds=preparation,
        labels_to_make=to_make,
        trial_seconds=tuple(durations),
        budget_share=share,
        wall_seconds=preparation + makespan(durations, slots),
        device_memory=probes[0].device_memory,
    )


def _start_ray(address: str | None) -> None:
    import ray

    to_root("ray")  # its token notice, whose handler the checks' imports put back
    if not ray.is_initialized():
        init = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        ray.init(address=address, **init)


def student_configs(
    config: SweepConfig, prepared: Prepared, gold: bool = False
) -> list[TrialConfig]:
    """The largest and the smallest student the space allows (the most and the fewest layers
    on each side), with typical values of what is searched (`typical`), the rungs the
    scheduler sets, and gold targets when asked (pseudo-labels not made yet)."""
    from trainables.train import total_steps

    values = typical_values(config)
    if values["targets"] == AUTO_TARGETS:  # probed as it will likely train: labels if made
        values["targets"] = "gold" if prepared.data.pseudo_labels is None else "pseudo"
    if gold:
        values["targets"] = "gold"
    students = []
    for pick in (max, min):
        counts = {
            side: pick(_bounds(getattr(config.layers, side))) for side in ("encoder", "decoder")
        }
        student = plan({**values, **counts}, prepared.parent_layers)
        steps = total_steps(student.train, _training_rows(prepared, student.train.targets))
        students.append(dataclasses.replace(student, rungs=rung_config(config.scheduler, steps)))
    return students


def budget_shares(
    config: SweepConfig, sizes: Sequence[float], first_sizes: Sequence[float]
) -> list[float]:
    """How far into its budget each trial after the `first:` points gets, on average, under the
    sweep's scheduler; 1 for every trial without early stopping.

    asha's own rule (`SuccessiveHalving`, the sweep's objectives) replayed `HALVING_RUNS` times,
    the trials reporting in the order they start: each trial's size objectives (params, size)
    its student's size, the `first:` points' own and the others' drawn from `sizes` (the
    space's students); every other objective a uniform random draw at each rung. The screen's
    picks, the trials right after the `first:` points, are judged but never stopped
    (`search.strategy.halving.never_stopped`).
    """
    firsts = 0 if config.scheduler.stop_first else min(len(first_sizes), config.trials)
    others = config.trials - firsts
    if config.scheduler.name != "asha":
        return [1.0] * others
    spared = 0 if config.scheduler.stop_first or not config.sampler.screen else MOST_PICKS
    eta = config.scheduler.reduction_factor
    fractions = [eta**-k for k in range(config.scheduler.rungs - 1, 0, -1)]
    objectives = [(o.metric in SIZE_METRICS, o.mode) for o in config.objectives]
    rng = np.random.default_rng(SEED)

    def point(size: float) -> list[float]:
        return [size if is_size else rng.random() for is_size, _ in objectives]

    reached = np.zeros(others)
    for _ in range(HALVING_RUNS):
        rule = SuccessiveHalving(eta, [mode for _, mode in objectives])
        for first, size in enumerate(first_sizes[:firsts]):
            for rung in range(len(fractions)):
                rule.judge(f"first-{first}", rung, point(size))
        for trial in range(others):
            size = float(rng.choice(sizes))
            share = 1.0  # it runs to the end unless a rung stops it
            for rung, fraction in enumerate(fractions):
                if not rule.judge(str(trial), rung, point(size)) and trial >= spared:
                    share = fraction
                    break
            reached[trial] += share
    return list(reached / HALVING_RUNS)


def trial_time(
    probe: TrialProbe, steps: int, eval_pairs: int, rungs: RungConfig, share: float
) -> float:
    """Seconds of a trial that runs `share` of its `steps` (and the rungs on the way), then
    its final evaluation if it runs them all."""
    seconds = probe.start_seconds + share * steps * probe.step_seconds
    rung_pairs = min(rungs.examples or eval_pairs, eval_pairs)
    seconds += sum(
        rung_pairs * probe.rung_seconds_per_pair for s in rungs.steps if s <= share * steps
    )
    if share >= 1.0:
        seconds += eval_pairs * probe.eval_seconds_per_pair
    return seconds


def interpolate(small: TrialProbe, large: TrialProbe, params: float) -> TrialProbe:
    """A probe for a student of `params` parameters, linear between two probed ones."""
    t = min(1.0, max(0.0, (params - small.params) / max(large.params - small.params, 1)))

    def mix(name: str) -> float:
        return getattr(small, name) + t * (getattr(large, name) - getattr(small, name))

    timings = ("start_seconds", "step_seconds", "eval_seconds_per_pair", "rung_seconds_per_pair")
    return dataclasses.replace(large, params=int(params), **{name: mix(name) for name in timings})


def makespan(durations: Sequence[float], slots: int) -> float:
    """Wall time of running `durations` in order, each on the first of `slots` to be free."""
    free = [0.0] * max(1, slots)
    for seconds in durations:
        heapq.heapreplace(free, free[0] + seconds)
    return max(free)


def trial_seconds(
    config: SweepConfig, prepared: Prepared, student: TrialConfig, probes: Sequence[TrialProbe]
) -> tuple[list[float], float]:
    """Every trial's expected seconds in the order they start (the `first:` points, then the
    rest at the space's mean student size), and the share of its steps one of the rest runs on
    average. `student` gives the budget (steps, rungs); `probes` are the largest's, the
    smallest's."""
    from trainables.train import total_steps

    large, small = probes
    steps = total_steps(student.train, _training_rows(prepared, student.train.targets))
    eval_pairs = len(prepared.data.eval_references)
    sizes, first_sizes = student_sizes(config, prepared)
    shares = budget_shares(config, sizes, first_sizes)
    firsts = first_sizes[: config.trials - len(shares)]
    durations = [
        trial_time(interpolate(small, large, size), steps, eval_pairs, student.rungs, 1.0)
        for size in firsts
    ]
    middle = interpolate(small, large, float(np.mean(sizes)))
    durations += [trial_time(middle, steps, eval_pairs, student.rungs, s) for s in shares]
    return durations, float(np.mean(shares)) if shares else 1.0


def describe(sweep: SweepPlan, config: SweepConfig) -> list[str]:
    """The plan as the lines `plan` prints."""
    lines = []
    for label, (name, probe) in (("largest", sweep.largest), ("smallest", sweep.smallest)):
        lines.append(
            f"{label} student {name} ({probe.params / 1e6:.2f}M parameters): "
            f"{probe.step_seconds:.3f}s a step, peak {size_text(probe.peak_bytes)} "
            f"(micro-batch {probe.micro_batch_size}), evaluation "
            f"{probe.eval_seconds_per_pair * 1000:.0f} ms a pair"
        )
    if sweep.needs_checkpointing:
        lines.append("the largest student fits only with train.gradient_checkpointing: true")
    if config.resources.gpus:
        per = sweep.trials_per_device
        packs = f"resources.gpus: {1 / per:.2g} packs them" if per else "none fits"
        lines.append(f"trials per GPU: {per} ({packs})")
    stops = (
        f", asha runs {sweep.budget_share:.0%} of the rest's steps"
        if sweep.budget_share < 1
        else ""
    )
    labels = f", {sweep.labels_to_make:,} pseudo-labels to make" if sweep.labels_to_make else ""
    if labels and chooses_targets(config):
        labels += " (if targets: auto picks them; counted)"
    lines.append(
        f"estimate: {len(sweep.trial_seconds)} trials, {sweep.slots} at a time, "
        f"{sweep.trial_hours:.2f} trial-hours{stops}; preparation {duration(sweep.prepare_seconds)}"
        f"{labels}; wall time {duration(sweep.wall_seconds)}"
    )
    return lines


# --- the probes ---------------------------------------------------------------------------


def _probe(
    workers: BaseWorkers,
    prepared: Prepared,
    students: list[TrialConfig],
) -> tuple[list[TrialProbe], bool]:
    """Both students probed, and whether with gradient checkpointing: as the space says, else
    with it when the largest fits only so.

    Raises:
        PlanError: the largest does not fit even with gradient checkpointing.
    """
    from trainables.memory import DoesNotFitError

    probe_args = (prepared.data, PROBE_STEPS, PROBE_PAIRS)
    tries = [students]
    if not students[0].train.gradient_checkpointing:
        tries.append([_with_checkpointing(s) for s in students])
    for attempt in tries:
        try:
            return workers.probe(prepared.base, attempt, *probe_args), attempt is not students
        except DoesNotFitError as err:
            refused = err
    needs = "runs out" if refused.needed is None else f"needs {size_text(refused.needed)}"
    raise PlanError(
        f"the largest student, {_name(students[0])}, does not fit: with gradient checkpointing "
        f"and one example a micro-batch, a training step on the longest batch {needs}, and a "
        f"trial may use {size_text(refused.limit)}; shorten data.max_source_length, keep fewer "
        "layers, or give each trial more memory (resources.gpus)"
    )


def _with_checkpointing(student: TrialConfig) -> TrialConfig:
    train = dataclasses.replace(student.train, gradient_checkpointing=True)
    return dataclasses.replace(student, train=train)


def _screen_seconds(
    config: SweepConfig,
    prepared: Prepared,
    workers: BaseWorkers,
    students: list[TrialConfig],
    slots: int,
) -> float:
    """The screen's time: the two probed students scored untrained, times the space's
    students, on as many workers as trials run at once."""
    if not config.sampler.screen:
        return 0.0
    head = prepared.data.eval_head(config.sampler.screen).eval_only()
    layers = [(s.encoder_layers, s.decoder_layers) for s in students]
    _, seconds = _timed(workers.zero_shot, prepared.base, layers, head)
    return seconds / len(layers) * len(screen_candidates(config, prepared.parent_layers)) / slots


def _teacher_seconds(
    config: SweepConfig, prepared: Prepared, probe: TrialProbe, slots: int
) -> float:
    """The teacher's own summaries of the evaluation split (on every worker; the largest
    student's evaluation rate), and for `train.targets: auto` the gold probe (its steps and
    evaluation at the largest student's rates, on one worker), unless done already."""
    if prepared.teacher is not None:
        return 0.0
    evaluation = len(prepared.data.eval_references) * probe.eval_seconds_per_pair
    seconds = evaluation / slots
    if chooses_targets(config):
        _, steps = gold_probe_trial(config, prepared)
        seconds += probe.start_seconds + steps * probe.step_seconds + evaluation
    return seconds


def _labels_to_make(config: SweepConfig, prepared: Prepared) -> int:
    rows = len(prepared.data.train_input_ids)
    return min(config.data.pseudo_examples or rows, rows)


def _training_rows(prepared: Prepared, targets: str) -> int:
    gold = len(prepared.data.train_input_ids)
    labeled = len(prepared.data.pseudo_labels) if prepared.data.pseudo_labels is not None else gold
    return {"gold": gold, "pseudo": labeled, "both": gold + labeled}[targets]


def student_sizes(config: SweepConfig, prepared: Prepared) -> tuple[list[float], list[float]]:
    """The parameters of every student the space allows but the `first:` points, and of those
    points."""
    from trainables.shrink import student_size

    values = typical_values(config)

    def size(point: dict[str, Any]) -> float:
        try:
            student = plan({**values, **point}, prepared.parent_layers)
        except (InfeasibleError, KeyError):  # a point its trial refuses at once: no size
            return 0.0
        counts = (student.encoder_layers, student.decoder_layers)
        return float(student_size(prepared.parent_size, prepared.layer_sizes, *counts).total)

    candidates = screen_candidates(config, prepared.parent_layers)
    sizes = [size(c) for c in candidates if not is_first_point(c, config.first)]
    return sizes or [float(prepared.parent_params)], [size(dict(p)) for p in config.first]


def _bounds(param: Param) -> tuple[int, int]:
    if isinstance(param, (IntRange, FloatRange)):
        return int(param.low), int(param.high)
    values = [int(v) for v in ([param.value] if isinstance(param, Fixed) else param.options)]
    return min(values), max(values)


def _name(student: TrialConfig) -> str:
    return describe_student(
        {
            "encoder": len(student.encoder_layers),
            "decoder": len(student.decoder_layers),
            "strategy": student.strategy,
        }
    )


def _timed(call: Any, *args: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - began
