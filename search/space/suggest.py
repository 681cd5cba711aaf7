"""From `space.yaml` to one trial: sample values, then turn them into a shrink plan.

`suggest` only asks the Optuna trial for values (Ray's OptunaSearch runs it as a
define-by-run space and requires that it computes nothing). `plan` is the separate, pure step
that turns sampled values into a `TrialConfig` and enforces the constraints (at least one layer
a side, no more than the parent has).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

from search.space.config import SweepConfig
from search.space.params import Choice, Fixed, FloatRange, IntRange, Param, param_values
from trainables.config import TrainConfig, TrialConfig
from trainables.layers import layer_indices


class InfeasibleError(ValueError):
    """Sampled values that do not make a valid student (for example a mask keeping nothing)."""


class SuggestTrial(Protocol):
    """The part of `optuna.Trial` that `suggest` uses (Ray passes a look-alike)."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


def suggest(
    trial: SuggestTrial, config: SweepConfig, parent_layers: tuple[int, int]
) -> dict[str, Any]:
    """Ask `trial` for every searched value; return the fixed values alongside.

    With the `mask` strategy, one keep/drop choice is asked per parent layer
    (`encoder_keep_0`, ...) instead of a layer count.

    Args:
        trial: the Optuna trial (or Ray's capturing stand-in).
        config: the sweep configuration.
        parent_layers: encoder and decoder layer counts of the base model.

    Returns:
        Values that are constant across trials (the fixed ones), keyed by parameter name. The
        searched ones are recorded by the trial itself.
    """
    fixed: dict[str, Any] = {}
    strategy = _ask(trial, "strategy", config.layers.strategy, fixed)
    for side, n_parent in zip(("encoder", "decoder"), parent_layers, strict=True):
        if strategy == "mask":
            for i in range(n_parent):
                trial.suggest_categorical(f"{side}_keep_{i}", [True, False])
        else:
            _ask(trial, side, getattr(config.layers, side), fixed)
    for f in dataclasses.fields(config.train):
        _ask(trial, f.name, getattr(config.train, f.name), fixed)
    return fixed


def _ask(trial: SuggestTrial, name: str, param: Param, fixed: dict[str, Any]) -> Any:
    if isinstance(param, Fixed):
        fixed[name] = param.value
        return param.value
    if isinstance(param, Choice):
        return trial.suggest_categorical(name, list(param.options))
    if isinstance(param, IntRange):
        return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, FloatRange):
        return trial.suggest_float(name, param.low, param.high, log=param.log)
    raise TypeError(f"not a search parameter: {param!r}")


def grid(config: SweepConfig, parent_layers: tuple[int, int]) -> dict[str, list[Any]]:
    """The searched parameters' values, for Optuna's GridSampler (fixed values are left out)."""
    params = {"strategy": config.layers.strategy}
    params.update(encoder=config.layers.encoder, decoder=config.layers.decoder)
    params.update({f.name: getattr(config.train, f.name) for f in dataclasses.fields(config.train)})
    return {name: param_values(p) for name, p in params.items() if not isinstance(p, Fixed)}


def plan(values: dict[str, Any], parent_layers: tuple[int, int]) -> TrialConfig:
    """Turn one trial's sampled and fixed values into a `TrialConfig`.

    Raises:
        InfeasibleError: the values keep no layer on a side, or more layers than the parent has.
    """
    strategy = values["strategy"]
    kept = []
    for side, n_parent in zip(("encoder", "decoder"), parent_layers, strict=True):
        if strategy == "mask":
            mask = [bool(values[f"{side}_keep_{i}"]) for i in range(n_parent)]
            if not any(mask):
                raise InfeasibleError(f"the {side} mask keeps no layer")
            kept.append(layer_indices("mask", n_parent, mask=mask))
            continue
        n_keep = int(values[side])
        if not 1 <= n_keep <= n_parent:
            raise InfeasibleError(f"{n_keep} {side} layers asked; the model has {n_parent}")
        kept.append(layer_indices(strategy, n_parent, n_keep))
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    train = TrainConfig(**{k: v for k, v in values.items() if k in train_names})
    return TrialConfig(strategy, tuple(kept[0]), tuple(kept[1]), train)


def typical_values(config: SweepConfig) -> dict[str, Any]:
    """Every train value and the layer strategy at its typical value (`typical`); `sft` for
    `mask`, whose students are layer by layer, not counts."""
    train = {
        f.name: typical(getattr(config.train, f.name)) for f in dataclasses.fields(config.train)
    }
    strategy = typical(config.layers.strategy)
    return {**train, "strategy": "sft" if strategy == "mask" else strategy}


def typical(param: Param) -> Any:
    """A fixed value, the first choice, or the middle of a range (geometric for a log one)."""
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choice):
        return param.options[0]
    middle = (param.low + param.high) / 2
    if param.log:
        middle = math.sqrt(param.low * param.high)
    return round(middle) if isinstance(param, IntRange) else middle
