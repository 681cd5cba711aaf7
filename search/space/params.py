"""The four kinds of search-space parameter in `space.yaml`: a fixed value, a list of choices,
or an integer or float range; and how a YAML value becomes one. No torch, no Optuna."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


Param = Fixed | Choice | IntRange | FloatRange


def param_values(param: Param) -> list[Any] | None:
    """All values a parameter can take, or None for a continuous range."""
    if isinstance(param, Fixed):
        return [param.value]
    if isinstance(param, Choice):
        return list(param.options)
    if isinstance(param, IntRange):
        return list(range(param.low, param.high + 1, param.step))
    return None


def parse_param(value: Any, where: str, errors: list[str]) -> Param | None:
    """A scalar is fixed, a list is a choice, a mapping with low/high is a range."""
    if isinstance(value, list):
        if not value:
            errors.append(f"{where}: empty list of choices")
            return None
        return Choice(tuple(value))
    if not isinstance(value, dict):
        return Fixed(number(value))
    unknown = set(value) - {"low", "high", "step", "log"}
    if unknown:
        errors.append(
            f"{where}: unknown key(s) {sorted(unknown)} in a range (low, high, step, log)"
        )
    low, high = number(value.get("low")), number(value.get("high"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        errors.append(f"{where}: a range needs numeric low and high, got {value!r}")
        return None
    if low > high:
        errors.append(f"{where}: inverted range, low {low} > high {high}")
        return None
    log = bool(value.get("log", False))
    if log and low <= 0:
        errors.append(f"{where}: a log range needs low > 0, got {low}")
        return None
    if isinstance(low, int) and isinstance(high, int):
        step = value.get("step", 1)
        if not isinstance(step, int) or step < 1:
            errors.append(f"{where}: step must be a positive integer, got {step!r}")
            return None
        return IntRange(low, high, step, log)
    if "step" in value:
        errors.append(f"{where}: step applies to integer ranges only")
    if low == high:
        errors.append(f"{where}: empty range, low == high == {low} (write the value itself)")
        return None
    return FloatRange(float(low), float(high), log)


def number(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` as a string; accept it as the float it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
