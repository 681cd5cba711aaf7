"""Pareto front, hypervolume, knee and front table: hand-made answers, then Optuna's own."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna._hypervolume import compute_hypervolume

from search.front.pareto import front_ranks, front_table, hypervolume, knee, pareto_front

# ROUGE-like maximised first, parameter-count-like minimised second.
POINTS = [(1.0, 10.0), (2.0, 20.0), (1.5, 30.0), (3.0, 30.0)]


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        (["max", "min"], [True, True, False, True]),
        (["min", "min"], [True, False, False, False]),
        (["max", "max"], [False, False, False, True]),
        (["min", "max"], [True, False, True, False]),
    ],
)
def test_pareto_front_hand_made(modes: list[str], expected: list[bool]) -> None:
    mask = pareto_front(POINTS, modes)
    assert mask.dtype == bool
    assert mask.tolist() == expected


def test_pareto_front_keeps_every_copy_of_a_front_point() -> None:
    values = [(1.0, 10.0), (0.5, 20.0), (1.0, 10.0), (0.5, 20.0), (1.0, 10.0)]
    assert pareto_front(values, ["max", "min"]).tolist() == [True, False, True, False, True]


def test_pareto_front_tie_in_one_objective_is_dominated() -> None:
    # Same ROUGE, more parameters: weakly worse, so off the front.
    assert pareto_front([(0.3, 10.0), (0.3, 12.0)], ["max", "min"]).tolist() == [True, False]


def test_pareto_front_single_point_and_empty() -> None:
    assert pareto_front([(0.2, 5.0)], ["max", "min"]).tolist() == [True]
    empty = pareto_front([], ["max", "min"])
    assert empty.shape == (0,)
    assert empty.dtype == bool


def test_pareto_front_three_objectives() -> None:
    values = np.array(
        [
            [0.30, 100, 5.0],  # best rouge
            [0.20, 50, 5.0],  # best params
            [0.20, 60, 1.0],  # best latency
            [0.20, 60, 5.0],  # dominated by rows 1 and 2
            [0.10, 100, 9.0],  # dominated by everything
        ]
    )
    assert pareto_front(values, ["max", "min", "min"]).tolist() == [True, True, True, False, False]


@pytest.mark.parametrize(
    ("values", "modes", "match"),
    [
        ([(1.0, 2.0)], ["max", "down"], "modes"),
        ([(1.0, 2.0, 3.0)], ["max", "min"], "shape"),
        ([1.0, 2.0], ["max", "min"], "shape"),
        ([(1.0, float("nan"))], ["max", "min"], "NaN"),
    ],
)
def test_pareto_front_rejects_malformed_input(values: list, modes: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pareto_front(values, modes)


def _random_study(seed: int, n_objectives: int) -> tuple[optuna.Study, np.ndarray, list[str]]:
    """A study of 40 random trials plus duplicates, with coarse values so that ties occur."""
    rng = np.random.default_rng(seed)
    modes = ["max", "min", "min"][:n_objectives]
    directions = ["maximize" if mode == "max" else "minimize" for mode in modes]
    values = np.round(rng.uniform(0, 1, size=(40, n_objectives)), 1)
    values = np.vstack([values, values[rng.choice(40, size=6)]])
    study = optuna.create_study(directions=directions)
    for row in values:
        study.add_trial(optuna.trial.create_trial(values=row.tolist()))
    return study, values, modes


@pytest.mark.parametrize("n_objectives", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_optuna_best_trials(seed: int, n_objectives: int) -> None:
    study, values, modes = _random_study(seed, n_objectives)
    expected = sorted(t.number for t in study.best_trials)
    assert np.flatnonzero(pareto_front(values, modes)).tolist() == expected


def test_front_ranks_hand_made() -> None:
    # (1, 10) and (3, 30) and (2, 20) trade off; (1.5, 30) is beaten by (3, 30) and (2, 20).
    assert front_ranks(POINTS, ["max", "min"]).tolist() == [0, 0, 1, 0]
    assert front_ranks([[1.0], [3.0], [2.0], [3.0]], ["max"]).tolist() == [2, 0, 1, 0]
    assert front_ranks(np.empty((0, 2)), ["max", "min"]).tolist() == []


@pytest.mark.parametrize("n_objectives", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_front_ranks_match_optunas_non_dominated_sort(seed: int, n_objectives: int) -> None:
    from optuna.study._multi_objective import _fast_non_domination_rank

    _, values, modes = _random_study(seed, n_objectives)
    loss = values * np.array([-1.0 if mode == "max" else 1.0 for mode in modes])
    expected = _fast_non_domination_rank(loss)
    assert front_ranks(values, modes).tolist() == expected.tolist()


def test_hypervolume_hand_computed_2d() -> None:
    # rougeL (max) vs params (min), reference rougeL 0 and params 100 (the unshrunk model).
    values = [(0.3, 20), (0.5, 60), (0.2, 50), (0.4, 100), (0.5, 60)]
    # (0.3, 20) covers 0.3 x 80 = 24; (0.5, 60) adds (0.5 - 0.3) x 40 = 8. (0.2, 50) is
    # dominated, (0.4, 100) ties the reference and the last row is a duplicate.
    assert hypervolume(values, ["max", "min"], reference=(0.0, 100)) == pytest.approx(32.0)


def test_hypervolume_hand_computed_3d() -> None:
    # Two unit-cross-section boxes of volume 2 overlapping in a unit cube.
    values = [(0, 1, 1), (1, 0, 1)]
    assert hypervolume(values, ["min"] * 3, reference=(2, 2, 2)) == pytest.approx(3.0)


def test_hypervolume_ignores_points_not_beating_the_reference() -> None:
    values = [(0.0, 10.0), (0.4, 100.0), (0.5, 120.0)]
    assert hypervolume(values, ["max", "min"], reference=(0.0, 100.0)) == 0.0
    assert hypervolume([], ["max", "min"], reference=(0.0, 100.0)) == 0.0


def test_hypervolume_rejects_bad_reference() -> None:
    with pytest.raises(ValueError, match="reference"):
        hypervolume([(0.3, 20)], ["max", "min"], reference=(0.0, float("inf")))
    with pytest.raises(ValueError, match="shape"):
        hypervolume([(0.3, 20)], ["max", "min"], reference=(0.0,))


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_matches_optuna(seed: int, n_objectives: int) -> None:
    rng = np.random.default_rng(seed)
    modes = ["max", "min"] * 2
    modes = modes[:n_objectives]
    values = rng.uniform(0, 1, size=(30, n_objectives))
    values = np.vstack([values, values[:3]])
    reference = np.array([0.1 if mode == "max" else 0.9 for mode in modes])
    # Optuna minimises and requires every point to be no worse than the reference.
    sign = np.array([-1.0 if mode == "max" else 1.0 for mode in modes])
    loss, ref = values * sign, reference * sign
    expected = compute_hypervolume(loss[np.all(loss < ref, axis=1)], ref)
    assert expected > 0
    assert hypervolume(values, modes, reference) == pytest.approx(expected, rel=1e-9)


def test_knee_obvious_corner() -> None:
    # rougeL (max) vs params (min): row 3 keeps almost all ROUGE for a fifth of the size.
    values = [(0.10, 5), (0.20, 100), (0.05, 90), (0.19, 20), (0.195, 60)]
    assert knee(values, ["max", "min"]) == 3


def test_knee_is_farthest_from_the_chord() -> None:
    # Normalised scores: (1, 0), (0.9, 0.9), (0.8, 0.92), (0, 1); sums 1, 1.8, 1.72, 1.
    values = [(0, 10), (1, 1), (2, 0.8), (10, 0)]
    assert knee(values, ["min", "min"]) == 1


def test_knee_single_point_front() -> None:
    values = [(0.1, 50), (0.3, 10), (0.2, 40)]
    assert knee(values, ["max", "min"]) == 1


def test_knee_tie_goes_to_first_objective_then_earliest() -> None:
    two = [(0.2, 50), (0.3, 100)]
    assert knee(two, ["max", "min"]) == 1
    assert knee(two, ["min", "min"]) == 0
    duplicates = [(0.1, 50), (0.3, 10), (0.3, 10)]
    assert knee(duplicates, ["max", "min"]) == 1


def test_knee_three_objectives() -> None:
    values = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.8, 0.8, 0.8), (0.5, 0.5, 0.5)]
    assert knee(values, ["max"] * 3) == 3


def test_knee_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        knee([], ["max", "min"])


ROWS = [
    {"trial": 0, "rougeL": 0.20, "params": 60, "encoder_layers": [0, 2, 5]},
    {"trial": 1, "rougeL": 0.30, "params": 100, "encoder_layers": [0, 1, 2, 3, 4, 5]},
    {"trial": 2, "rougeL": 0.10, "params": 80, "encoder_layers": [5]},
    {"trial": 3, "rougeL": 0.15, "params": 30, "encoder_layers": [0]},
]


def test_front_table_keeps_front_rows_best_first() -> None:
    table = front_table(ROWS, [("rougeL", "max"), ("params", "min")])
    assert [row["trial"] for row in table] == [1, 0, 3]
    assert table[1] == ROWS[0]
    table[1]["trial"] = 99
    assert ROWS[0]["trial"] == 0  # copies, so callers may add columns freely


def test_front_table_breaks_ties_by_next_objective_then_input_order() -> None:
    # With a tie in "a", the higher "b" comes first; the duplicate rows keep their order.
    rows = [
        {"trial": 0, "a": 1, "b": 2, "c": 5},
        {"trial": 1, "a": 1, "b": 3, "c": 9},
        {"trial": 2, "a": 1, "b": 2, "c": 5},
        {"trial": 3, "a": 0, "b": 0, "c": 9},
    ]
    table = front_table(rows, [("a", "min"), ("b", "max"), ("c", "min")])
    assert [row["trial"] for row in table] == [3, 1, 0, 2]


def test_front_table_names_a_missing_objective() -> None:
    with pytest.raises(KeyError, match="trial 7"):
        front_table([{"trial": 7, "rougeL": 0.2}], [("rougeL", "max"), ("params", "min")])
