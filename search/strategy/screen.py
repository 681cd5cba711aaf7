"""What to train first: the zero-shot screen's picks.

With `sampler.screen: N`, every student the space allows (each strategy x encoder x decoder
count; students that keep the same layers count once) is shrunk and scored untrained on N
evaluation pairs before the first trial (`trainables.screen`). The screen's Pareto front of
loss against parameters foreshadows the sweep's front, and its knee, by the rule `export` uses
for the best trade-off (`search.front.pareto.knee`), is the student the screen expects to be that
trade-off. The sweep trains it and its two neighbours on the screen's front right after the
`first:` points, and early stopping never stops them (`search.strategy.halving.never_stopped`);
the sampler proposes the rest, knowing their scores. A sampler left to
itself needs many trials to find such a student among dozens (bench/README.md, "Zero-shot
screen").
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from search.front.pareto import knee, pareto_front
from search.space.config import SweepConfig
from search.space.constraints import before_training, feasible
from search.space.params import Fixed, param_values
from search.space.suggest import InfeasibleError, plan

# (the layers each student keeps, the evaluation pairs) -> each student's ZeroShotScore
ScoreStudents = Callable[[list[tuple[Sequence[int], Sequence[int]]], Any], list[Any]]

LAYER_KEYS = ("strategy", "encoder", "decoder")
SCREEN_FILE = "screen.csv"  # kept on the sweep's parent run
MOST_PICKS = 3  # the knee of the screen's front and its two neighbours


@dataclass(frozen=True)
class Screened:
    """One student scored untrained."""

    values: dict[str, Any]  # its strategy, encoder and decoder counts
    params: int
    params_non_embedding: int
    loss: float  # mean token cross-entropy on the screen's evaluation pairs


def screen_candidates(config: SweepConfig, parent_layers: tuple[int, int]) -> list[dict[str, Any]]:
    """Every student the space allows, once per set of kept layers (the first strategy listed
    names a student two strategies make alike). The `mask` strategy's 2^layers students are
    left out."""
    layers = config.layers
    strategies = param_values(layers.strategy) or []
    encoders, decoders = param_values(layers.encoder), param_values(layers.decoder)
    candidates, seen = [], set()
    for strategy in strategies:
        if strategy == "mask":
            continue
        for encoder in encoders or []:
            for decoder in decoders or []:
                values = {"strategy": strategy, "encoder": encoder, "decoder": decoder}
                kept = _kept_layers(values, parent_layers)
                if kept is not None and kept not in seen:
                    seen.add(kept)
                    candidates.append(values)
    return candidates


def screen_students(
    config: SweepConfig, prepared: Any, score: ScoreStudents | None = None
) -> tuple[list[Screened], float]:
    """Score every candidate student untrained; returns them and the seconds it took.

    Args:
        config: The sweep's configuration (its space, `sampler.screen` pairs).
        prepared: The driver's prepared base model and data.
        score: Scores students on evaluation pairs (the driver's workers); default: in this
            process (`trainables.screen.zero_shot_scores`).
    """
    from trainables.screen import zero_shot_scores

    start = time.perf_counter()
    candidates = screen_candidates(config, prepared.parent_layers)
    students = [_kept_layers(values, prepared.parent_layers) for values in candidates]
    if score is None:
        scores = zero_shot_scores(prepared.base, prepared.data, students, config.sampler.screen)
    else:
        scores = score(students, prepared.data.eval_head(config.sampler.screen).eval_only())
    screened = [
        Screened(values, s.params, s.params_non_embedding, s.loss)
        for values, s in zip(candidates, scores, strict=True)
    ]
    return screened, time.perf_counter() - start


def screen_picks(
    screened: Sequence[Screened], config: SweepConfig, parent_layers: tuple[int, int]
) -> list[Screened]:
    """The students the sweep trains first: the knee of the screen's front of loss against
    parameters, then its neighbours on that front (the next smaller and the next larger
    student), since the untrained loss foretells the ranking only roughly. Left out: students
    that break a constraint known before training, the `first:` points (tried anyway), and
    picks beyond the sweep's trials."""
    bounds = before_training(config.constraints)
    allowed = [s for s in screened if feasible(bounds, _known(s))]
    if not allowed:
        return []
    values = [(s.loss, s.params) for s in allowed]
    on_front = pareto_front(values, ["min", "min"])
    front = sorted((i for i, on in enumerate(on_front) if on), key=lambda i: values[i][1])
    at = front.index(knee(values, ["min", "min"]))
    picks = [allowed[i] for i in (front[at], *front[max(0, at - 1) : at], *front[at + 1 : at + 2])]
    tried = {_kept_layers(_with_fixed(p, config), parent_layers) for p in config.first}
    room = max(0, config.trials - len(config.first))
    return [s for s in picks if _kept_layers(s.values, parent_layers) not in tried][:room]


def pick_points(
    config: SweepConfig, screened: Sequence[Screened], parent_layers: tuple[int, int]
) -> list[dict[str, Any]]:
    """The screen's picks as points to try: their searched values (a fixed one is not the
    sampler's to set)."""
    searched = {k for k in LAYER_KEYS if not isinstance(getattr(config.layers, k), Fixed)}
    picks = screen_picks(screened, config, parent_layers)
    return [{k: v for k, v in s.values.items() if k in searched} for s in picks]


def points_to_try(
    config: SweepConfig, screened: Sequence[Screened], parent_layers: tuple[int, int]
) -> list[dict[str, Any]]:
    """What the sweep tries before the sampler proposes: the `first:` points, then the
    screen's picks (`pick_points`)."""
    return [*(dict(p) for p in config.first), *pick_points(config, screened, parent_layers)]


def screen_csv(screened: Sequence[Screened]) -> str:
    """The screen as a CSV table, one student a row, as kept with the sweep."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*LAYER_KEYS, "params", "params_non_embedding", "loss"])
    for s in screened:
        row = [*(s.values[k] for k in LAYER_KEYS), s.params, s.params_non_embedding]
        writer.writerow([*row, f"{s.loss:.6g}"])
    return out.getvalue()


def describe_student(values: dict[str, Any]) -> str:
    """'2+3 sft': encoder + decoder layers and the strategy."""
    return f"{values['encoder']}+{values['decoder']} {values['strategy']}"


def _known(screened: Screened) -> dict[str, float]:
    return {"params": screened.params, "params_non_embedding": screened.params_non_embedding}


def _with_fixed(point: dict[str, Any], config: SweepConfig) -> dict[str, Any]:
    """A `first:` point with the fixed layer values it leaves out."""
    fixed = {
        k: getattr(config.layers, k).value
        for k in LAYER_KEYS
        if isinstance(getattr(config.layers, k), Fixed)
    }
    return {**fixed, **point}


def _kept_layers(values: dict[str, Any], parent_layers: tuple[int, int]) -> tuple | None:
    if values.get("strategy") == "mask" or any(k not in values for k in LAYER_KEYS):
        return None
    try:
        chosen = plan(values, parent_layers)
    except InfeasibleError:
        return None
    return chosen.encoder_layers, chosen.decoder_layers
