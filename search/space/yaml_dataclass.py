"""Plain data parsed from YAML -> nested frozen dataclasses, every problem collected.

Generic: it knows nothing of shrink-sweep. A `Schema` says how to read the types the type
hints alone do not cover (`converters`) and which checks across fields to run on a built
dataclass (`checks`); `search.space.config` gives it the sweep's. Each problem is a string with its
YAML path, collected into one list so that a user fixes a file in one go.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

# (value, YAML path, problems) -> the converted value, or None after recording a problem
Converter = Callable[[Any, str, list[str]], Any]
# (a built dataclass, or a namespace of what was readable, problems) -> None
Check = Callable[[Any, list[str]], None]


@dataclass(frozen=True)
class Schema:
    converters: Mapping[Any, Converter] = field(default_factory=dict)  # keyed by type hint
    checks: Mapping[type, Check] = field(default_factory=dict)  # keyed by dataclass

    def build(self, cls: type, raw: Any, path: str, errors: list[str]) -> Any:
        """Build dataclass `cls` from a mapping, recording every problem under its YAML path.

        Returns:
            The dataclass, or None when a required field is missing or unreadable.
        """
        if not isinstance(raw, dict):
            errors.append(f"{path or '<top>'}: expected a mapping, got {kind(raw)}")
            return None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                known = ", ".join(sorted(fields))
                errors.append(f"{join(path, key)}: unknown key (known: {known})")
        values, incomplete = self._field_values(cls, fields, raw, path, errors)
        check = self.checks.get(cls, lambda value, errors: None)
        if not incomplete:
            built = cls(**values)
            check(built, errors)
            return built
        # Still run this level's checks on what was readable, so they report in the same error.
        check(types.SimpleNamespace(**{n: _default(f) for n, f in fields.items()} | values), errors)
        return None

    def _field_values(
        self,
        cls: type,
        fields: dict[str, dataclasses.Field],
        raw: dict,
        path: str,
        errors: list[str],
    ) -> tuple[dict[str, Any], bool]:
        """The readable field values, and whether a required field is missing or unreadable."""
        hints = typing.get_type_hints(cls)
        values = {}
        incomplete = False
        for name, f in fields.items():
            where = join(path, name)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if name not in raw:
                if required:
                    errors.append(f"{where}: required")
                incomplete |= required
                continue
            known = len(errors)
            value = self.convert(hints[name], raw[name], where, errors)
            # A bad value (None, its problem recorded) falls back to its default, so that the
            # checks across fields still run on everything else and report in the same error;
            # so does a null where the field takes none.
            if value is not None or len(errors) == known:
                values[name] = value
            else:
                incomplete |= required
        return values, incomplete

    def convert(self, hint: Any, value: Any, where: str, errors: list[str]) -> Any:
        """Check `value` against a type hint, converting YAML lists to tuples and ints to floats."""
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if hint in self.converters:
            return self.converters[hint](value, where, errors)
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.convert(inner, value, where, errors)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, where, errors)
        if origin is tuple:
            if not isinstance(value, list):
                errors.append(f"{where}: expected a list, got {kind(value)}")
                return ()
            items = (self.convert(args[0], v, f"{where}[{i}]", errors) for i, v in enumerate(value))
            return tuple(item for item in items if item is not None)
        if origin is dict:
            if not isinstance(value, dict):
                errors.append(f"{where}: expected a mapping, got {kind(value)}")
                return {}
            return {
                str(k): self.convert(args[1], v, join(where, k), errors)
                if args[1] is not Any
                else v
                for k, v in value.items()
            }
        return _scalar(hint, value, where, errors)


def apply_overrides(raw: dict, overrides: list[str], errors: list[str]) -> dict:
    """`data.max_train_examples=200` sets that key; the value is parsed as YAML."""
    raw = deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            errors.append(f"override {item!r}: expected KEY.PATH=VALUE")
            continue
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                errors.append(f"override {item!r}: {part} is not a mapping")
                break
        else:
            try:
                node[last] = yaml.safe_load(text)
            except yaml.YAMLError as err:
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                errors.append(f"override {item!r}: the value is not valid YAML ({problem})")
    return raw


def deep_copy(value: Any) -> Any:
    """A copy of plain YAML data (mappings, lists, scalars) that shares no container."""
    if isinstance(value, dict):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _scalar(hint: type, value: Any, where: str, errors: list[str]) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    got = "null" if value is None else f"{kind(value)} {value!r}"
    errors.append(f"{where}: expected {hint.__name__}, got {got}")
    return None


def join(path: str, key: Any) -> str:
    """A YAML path one level down: `data` + `files` is `data.files`."""
    return f"{path}.{key}" if path else str(key)


def kind(value: Any) -> str:
    """What a YAML value is, in words, for a problem's message."""
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )
