"""The sweep's one typed configuration: `space.yaml` parsed into frozen dataclasses.

Loading checks everything that can be checked without a model or a dataset: unknown keys,
wrong types, empty or inverted ranges, unknown strategies and samplers. Every problem is
collected with its YAML path and raised together as one `ConfigError`, so a user fixes the
file in one go. The generic reading of YAML into dataclasses is `search.space.yaml_dataclass`; the
parameter kinds (fixed, choice, range) are `search.space.params`; the checks across fields are here.
What a trial itself is told (`TrainConfig`, `DataConfig`, `DecodingConfig`) is defined in
`trainables.config`. Checks that need the model (more layers than it has) or the data (a missing
column) live in `search.driver.preflight` and report problems the same way.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from search.space.params import Fixed, Param, number, param_values, parse_param
from search.space.yaml_dataclass import Schema, apply_overrides, kind
from trainables.config import OPTIMIZERS, TARGETS, DataConfig, DecodingConfig, TrainConfig
from trainables.layers import STRATEGIES

MODES = ("max", "min")  # an objective is maximized or minimized
SAMPLERS = ("tpe", "gp", "nsga2", "random", "grid")
SCHEDULERS = ("fifo", "asha", "pareto")
# train.targets: the sweep chooses gold or pseudo for every trial before the first one starts
# (`search.strategy.recipe`); the trials themselves only ever see the choice.
AUTO_TARGETS = "auto"
# Metrics a trial reports that may serve as objectives.
METRICS = (
    "rouge1",
    "rouge2",
    "rougeL",
    "rougeLsum",
    "params",
    "params_non_embedding",
    "size_mb",
    "latency_ms",
)


class ConfigError(ValueError):
    """Every problem found in a configuration, each with its place in the file."""

    def __init__(self, problems: list[str], source: str = "space.yaml") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


# --- The configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectiveConfig:
    metric: str
    mode: str


@dataclass(frozen=True)
class ConstraintConfig:
    """A bound on a reported metric: a trial that breaks it is infeasible
    (`search.space.constraints`)."""

    metric: str
    max: float | None = None
    min: float | None = None


@dataclass(frozen=True)
class LayerSpaceConfig:
    """How many layers each side keeps, and which."""

    encoder: Param
    decoder: Param
    strategy: Param = Fixed("sft")


# The trial's fine-tuning settings, each of which may be fixed or searched: one field per
# `TrainConfig` field, defaulting to that field's default, so the two can never drift apart.
TrainSpaceConfig = dataclasses.make_dataclass(
    "TrainSpaceConfig",
    [(f.name, Param, field(default=Fixed(f.default))) for f in dataclasses.fields(TrainConfig)],
    frozen=True,
)
TrainSpaceConfig.__module__ = __name__
TrainSpaceConfig.__doc__ = "Fine-tuning settings (`TrainConfig`'s fields), each fixed or searched."


@dataclass(frozen=True)
class SamplerConfig:
    """Which Optuna sampler proposes the trials: `tpe` (multivariate, as in Optuna 5), `gp`
    (a Gaussian process with log expected hypervolume improvement), `nsga2`, `random` or
    `grid`."""

    name: str = "tpe"
    seed: int = 0
    startup_trials: int = 10  # tpe, gp: trials sampled at random before it models the results
    constant_liar: bool = True  # tpe: running trials count as bad, so parallel ones differ
    screen: int = 0  # evaluation pairs to score each student on untrained (strategy.screen)


@dataclass(frozen=True)
class SchedulerConfig:
    """When trials stop early. `fifo` runs every trial to its end.

    `asha` is asynchronous successive halving for several objectives (`search.strategy.halving`): at
    `rungs - 1` rungs (budget fractions 1/eta^(rungs-1) .. 1/eta) a trial is scored cheaply
    (greedy decoding on the first `rung_examples` evaluation pairs) and goes on only while
    its non-dominated rank is among the best 1/eta of all results at that rung so far.

    `pareto` (the older rule) stops a trial whose intermediate point (at a `train.eval_every`
    step) is dominated by more than `1 - 1/reduction_factor` of the other trials' points at
    that step, once `min_peers` of them exist."""

    name: str = "fifo"
    reduction_factor: float = 3.0  # eta: keep the best 1/eta at each rung
    rungs: int = 3  # asha: judged at 1/9 and 1/3 of the budget with eta 3, then the end
    rung_examples: int | None = 50  # asha: evaluation pairs a rung scores; null: all
    rung_num_beams: int = 1  # asha: a rung's beams (1: greedy); the final score decodes as set
    min_peers: int = 2  # pareto: peers at a step before it stops anything
    stop_first: bool = False  # whether `first:` points and the screen's picks may stop early


@dataclass(frozen=True)
class ResourcesConfig:
    """What one trial gets from Ray; fractions allowed."""

    cpus: float = 1.0
    gpus: float = 0.0
    # GiB a trial's training step may use (micro_batch_size: auto, plan); None: its share of
    # its device (of a GPU, `gpus` of it; on a CPU, the memory free).
    memory_gib: float | None = None

    @property
    def memory_limit(self) -> int | None:
        """`memory_gib` in bytes."""
        return None if self.memory_gib is None else int(self.memory_gib * 2**30)


@dataclass(frozen=True)
class SweepConfig:
    """Everything one sweep needs; the parsed form of `space.yaml`."""

    model: str
    data: DataConfig
    layers: LayerSpaceConfig
    name: str = "sweep"
    trust_remote_code: bool = False
    objectives: tuple[ObjectiveConfig, ...] = (
        ObjectiveConfig("rougeL", "max"),
        ObjectiveConfig("params", "min"),
    )
    train: TrainSpaceConfig = field(default_factory=TrainSpaceConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    sampler: SamplerConfig = SamplerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    trials: int = 8
    max_concurrent: int = 0  # 0: as many as the resources allow
    resources: ResourcesConfig = ResourcesConfig()
    first: tuple[dict[str, Any], ...] = ()  # configurations to try before the sampler proposes
    reference_point: dict[str, float] = field(default_factory=dict)  # for the hypervolume
    constraints: tuple[ConstraintConfig, ...] = ()  # bounds a trial must keep to count
    keep_weights: str = "pareto"  # which trials' weights to keep: pareto, all, none


# --- Loading -------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """Parse and check a `space.yaml`, with `key.path=value` overrides applied first.

    Raises:
        ConfigError: the file is missing or not YAML, or any value is wrong; all problems at once.
    """
    return load_space(path, overrides)[0]


def load_space(path: str | Path, overrides: list[str] = ()) -> tuple[SweepConfig, dict]:
    """Like `load_config`, and also return the plain data (overrides applied) it came from,
    which a sweep keeps so that it can be resumed exactly as it began."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError([f"cannot read the file: {err.strerror}"], str(path)) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}"], str(path)) from None
    config = config_from_dict(raw, overrides, source=str(path))
    return config, apply_overrides(raw, overrides, [])


def config_from_dict(
    raw: Any, overrides: list[str] = (), source: str = "space.yaml"
) -> SweepConfig:
    """Build a `SweepConfig` from plain data (as parsed from YAML). See `load_config`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"the top level must be a mapping, got {kind(raw)}"], source)
    errors: list[str] = []
    raw = apply_overrides(raw, overrides, errors)
    config = SCHEMA.build(SweepConfig, raw, "", errors)
    if errors:
        raise ConfigError(errors, source)
    return config


# --- Checks across fields ------------------------------------------------------------------


def _check_sweep(config: SweepConfig, errors: list[str]) -> None:
    """Checks across sections; a section that failed to load (None) is skipped."""
    for i, objective in enumerate(config.objectives):
        where = f"objectives[{i}]"
        if objective.metric not in METRICS:
            errors.append(f"{where}.metric: unknown metric {objective.metric!r} (one of {METRICS})")
        if objective.mode not in MODES:
            errors.append(f"{where}.mode: must be max or min, got {objective.mode!r}")
    if len({o.metric for o in config.objectives}) != len(config.objectives):
        errors.append("objectives: a metric is named twice")
    if not config.objectives:
        errors.append("objectives: at least one objective is needed")
    for i, constraint in enumerate(config.constraints):
        where = f"constraints[{i}]"
        if constraint.metric not in METRICS:
            errors.append(
                f"{where}.metric: unknown metric {constraint.metric!r} (one of {METRICS})"
            )
        if constraint.max is None and constraint.min is None:
            errors.append(f"{where}: give max, min or both")
        elif None not in (constraint.max, constraint.min) and constraint.min > constraint.max:
            errors.append(f"{where}: min {constraint.min} is above max {constraint.max}")
    for metric in config.reference_point:
        if metric not in {o.metric for o in config.objectives}:
            errors.append(f"reference_point.{metric}: not one of the objectives")
    if config.sampler.name not in SAMPLERS:
        errors.append(f"sampler.name: unknown sampler {config.sampler.name!r} (one of {SAMPLERS})")
    if config.sampler.startup_trials < 0:
        errors.append(
            f"sampler.startup_trials: must be 0 or more, got {config.sampler.startup_trials}"
        )
    if config.sampler.screen < 0:
        errors.append(f"sampler.screen: must be 0 or more, got {config.sampler.screen}")
    if config.sampler.name == "grid" and config.layers is not None:
        _check_grid(config, errors)
    _check_scheduler(config, errors)
    if config.trials < 1:
        errors.append(f"trials: must be at least 1, got {config.trials}")
    if config.max_concurrent < 0:
        errors.append(f"max_concurrent: must be 0 (automatic) or more, got {config.max_concurrent}")
    if config.resources.cpus <= 0:
        errors.append(f"resources.cpus: must be more than 0, got {config.resources.cpus}")
    if config.resources.gpus < 0:
        errors.append(f"resources.gpus: must be 0 or more, got {config.resources.gpus}")
    if config.resources.memory_gib is not None and config.resources.memory_gib <= 0:
        errors.append(
            f"resources.memory_gib: must be more than 0, got {config.resources.memory_gib}"
        )
    if config.keep_weights not in ("pareto", "all", "none"):
        errors.append(f"keep_weights: one of pareto, all, none; got {config.keep_weights!r}")
    if isinstance(config.model, str) and not config.model.strip():
        errors.append("model: empty")
    if isinstance(config.name, str) and (not config.name.strip() or "/" in config.name):
        errors.append(f"name: an experiment name, not empty and without '/', got {config.name!r}")
    if config.decoding.num_beams < 1 or config.decoding.max_new_tokens < 1:
        errors.append("decoding: num_beams and max_new_tokens must be at least 1")
    for i, point in enumerate(config.first):
        _check_first(point, f"first[{i}]", config, errors)


def _check_scheduler(config: SweepConfig, errors: list[str]) -> None:
    scheduler = config.scheduler
    if scheduler.name not in SCHEDULERS:
        errors.append(f"scheduler.name: unknown scheduler {scheduler.name!r} (one of {SCHEDULERS})")
    if scheduler.reduction_factor <= 1:
        errors.append(
            f"scheduler.reduction_factor: must be more than 1, got {scheduler.reduction_factor}"
        )
    if scheduler.min_peers < 1:
        errors.append(f"scheduler.min_peers: must be at least 1, got {scheduler.min_peers}")
    if scheduler.rungs < 2:
        errors.append(f"scheduler.rungs: at least 2 (one rung and the end), got {scheduler.rungs}")
    if scheduler.rung_examples is not None and scheduler.rung_examples < 1:
        errors.append("scheduler.rung_examples: at least 1 (or null for all)")
    if scheduler.rung_num_beams < 1:
        errors.append(f"scheduler.rung_num_beams: at least 1, got {scheduler.rung_num_beams}")
    if (
        scheduler.name == "pareto"
        and config.train is not None
        and param_values(config.train.eval_every) == [0]
    ):
        errors.append(
            "scheduler.name: pareto stops trials at intermediate evaluations; "
            "set train.eval_every above 0"
        )


def _check_layers(layers: LayerSpaceConfig, errors: list[str]) -> None:
    for side in ("encoder", "decoder"):
        param = getattr(layers, side)
        if param is None:
            continue
        values = param_values(param)
        if values is None or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            errors.append(f"layers.{side}: layer counts must be integers, got {param}")
        elif min(values) < 1:
            errors.append(f"layers.{side}: every side keeps at least one layer, got {min(values)}")
    strategies = param_values(layers.strategy) or [] if layers.strategy else []
    for s in strategies:
        if s not in STRATEGIES:
            errors.append(f"layers.strategy: unknown strategy {s!r} (one of {STRATEGIES})")


def _check_train(train: TrainSpaceConfig, errors: list[str]) -> None:
    positive = ("learning_rate", "batch_size", "gradient_accumulation_steps", "distill_temperature")
    non_negative = (
        "max_steps",
        "epochs",
        "warmup_ratio",
        "weight_decay",
        "label_smoothing",
        "distill",
        "distill_hidden",
    )
    integers = ("max_steps", "batch_size", "gradient_accumulation_steps", "seed", "eval_every")
    for name in positive + non_negative + integers:
        param = getattr(train, name)
        values = param_values(param)
        bounds = values if values is not None else [param.low, param.high]
        where = f"train.{name}"
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounds):
            errors.append(f"{where}: expected numbers, got {param}")
            continue
        if name in integers and (values is None or not all(isinstance(v, int) for v in values)):
            errors.append(f"{where}: expected integers, got {param}")
        if name in positive and min(bounds) <= 0:
            errors.append(f"{where}: must be more than 0, got {min(bounds)}")
        if name in non_negative and min(bounds) < 0:
            errors.append(f"{where}: must be 0 or more, got {min(bounds)}")
    for name in ("warmup_ratio", "label_smoothing", "distill"):
        values = param_values(getattr(train, name)) or [getattr(train, name).high]
        if not all(isinstance(v, (int, float)) for v in values):
            continue
        if name == "distill" and max(values) > 1:
            errors.append(f"train.distill: must be at most 1, got {max(values)}")
        elif name != "distill" and max(values) >= 1:
            errors.append(f"train.{name}: must be below 1, got {max(values)}")
    targets = param_values(train.targets) or []
    for target in targets:
        if target not in (*TARGETS, AUTO_TARGETS):
            known = ", ".join((*TARGETS, AUTO_TARGETS))
            errors.append(f"train.targets: unknown targets {target!r} (one of {known})")
    if AUTO_TARGETS in targets and len(targets) > 1:
        errors.append(
            f"train.targets: {AUTO_TARGETS} chooses for the whole sweep; it is not searched "
            f"beside {', '.join(t for t in targets if t != AUTO_TARGETS)}"
        )
    for name in ("distill_hidden_encoder", "gradient_checkpointing"):
        flags = param_values(getattr(train, name)) or []
        if not all(isinstance(v, bool) for v in flags):
            errors.append(f"train.{name}: expected true or false, got {flags}")
    for optimizer in param_values(train.optimizer) or []:
        if optimizer not in OPTIMIZERS:
            errors.append(f"train.optimizer: unknown optimizer {optimizer!r} (one of {OPTIMIZERS})")
    for size in param_values(train.micro_batch_size) or []:
        if size != "auto" and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            errors.append(
                f"train.micro_batch_size: expected auto or a count (0: the batch), got {size!r}"
            )
    steps, epochs = param_values(train.max_steps), param_values(train.epochs)
    if steps == [0] and epochs == [0.0]:
        errors.append("train: set max_steps or epochs above 0")


def _check_data(data: DataConfig, errors: list[str]) -> None:
    if not data.name and not data.files:
        errors.append("data: name a dataset (data.name) or local files (data.files)")
    if data.name and data.files:
        errors.append("data: give data.name or data.files, not both")
    for split, path in data.files.items():
        if Path(path).suffix.lower() not in (".jsonl", ".json", ".csv", ".parquet", ".gz"):
            errors.append(
                f"data.files.{split}: unsupported file type {path!r} (jsonl, csv, parquet)"
            )
    for name in ("max_source_length", "max_target_length"):
        if getattr(data, name) < 1:
            errors.append(f"data.{name}: must be at least 1")
    for name in ("max_train_examples", "max_eval_examples", "pseudo_examples"):
        value = getattr(data, name)
        if value is not None and value < 1:
            errors.append(f"data.{name}: must be at least 1 (or null for all)")
    if data.source_template is not None:
        try:
            data.source_template.format_map(_AnyColumn())
        except (ValueError, IndexError) as err:
            errors.append(f"data.source_template: not a valid template: {err}")


class _AnyColumn(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _check_grid(config: SweepConfig, errors: list[str]) -> None:
    params = [
        ("layers." + f.name, getattr(config.layers, f.name))
        for f in dataclasses.fields(config.layers)
    ]
    params += [
        ("train." + f.name, getattr(config.train, f.name)) for f in dataclasses.fields(config.train)
    ]
    for where, param in params:
        if param_values(param) is None:
            errors.append(
                f"{where}: the grid sampler needs a list or an integer range, "
                f"not the float range {param.low}..{param.high}"
            )
    if "mask" in (param_values(config.layers.strategy) or []):
        errors.append("layers.strategy: the grid sampler cannot search 'mask' (2^layers points)")


# With the mask strategy a first point may set each layer's keep/drop choice.
_MASK_KEY = re.compile(r"^(encoder|decoder)_keep_\d+$")


def _check_first(point: dict, where: str, config: SweepConfig, errors: list[str]) -> None:
    if not isinstance(point, dict):
        errors.append(f"{where}: expected a mapping of parameter values")
        return
    # Optuna silently ignores a value for a parameter it never asks for, so a misspelt or
    # fixed parameter in a first point would quietly run something else than written.
    params = _space_params(config)
    for key, value in point.items():
        if key not in params and not _MASK_KEY.match(str(key)):
            errors.append(f"{where}.{key}: unknown parameter (known: {', '.join(params)})")
            continue
        path, fixed = params.get(key) or ("", None)
        if isinstance(fixed, Fixed) and number(value) != fixed.value:
            errors.append(
                f"{where}.{key}: {value!r}, but {path} is fixed at {fixed.value!r}; "
                "a first point can only choose values that are searched"
            )
    for side in ("encoder", "decoder"):
        value = point.get(side)
        if value is not None and (not isinstance(value, int) or value < 1):
            errors.append(f"{where}.{side}: a layer count of at least 1, got {value!r}")
    strategy = point.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        errors.append(f"{where}.strategy: unknown strategy {strategy!r}")


def _space_params(config: SweepConfig) -> dict[str, tuple[str, Param] | None]:
    """Every parameter of the search space by name: its YAML path and value, or None where
    its section failed to load."""
    sections = {
        "layers": (config.layers, LayerSpaceConfig),
        "train": (config.train, TrainSpaceConfig),
    }
    params: dict[str, tuple[str, Param] | None] = {}
    for section, (value, cls) in sections.items():
        for f in dataclasses.fields(cls):
            params[f.name] = (f"{section}.{f.name}", getattr(value, f.name)) if value else None
    return params


# How `space.yaml` is read: parameters by `parse_param`, then each section's checks.
SCHEMA = Schema(
    converters={Param: parse_param},
    checks={
        SweepConfig: _check_sweep,
        LayerSpaceConfig: _check_layers,
        TrainSpaceConfig: _check_train,
        DataConfig: _check_data,
    },
)
