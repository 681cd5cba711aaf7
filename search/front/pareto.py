"""Pareto fronts, hypervolume and the knee of a front, in pure numpy.

Every function takes a matrix of objective values, one row per trial and one column per
objective, plus a mode per column: "max" (higher is better, e.g. ROUGE-L) or "min" (lower is
better, e.g. parameter count). Internally each column is turned into a loss to be minimised,
as Optuna does, so one dominance rule serves every mix of modes.

The front follows Optuna's `study.best_trials` exactly (checked in tests/test_pareto.py): a row
is on the front unless another row is at least as good in every objective and strictly better
in one. Identical rows never dominate each other, so duplicates of a front point are all on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from search.space.config import MODES

# Knee scores this close to the best count as tied, so that rounding in the rescaling cannot
# pick a different point of a symmetric front than exact arithmetic would.
_KNEE_TOLERANCE = 1e-12


def pareto_front(
    values: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str]
) -> np.ndarray:
    """Marks the rows of `values` that no other row dominates.

    Row `a` dominates row `b` when `a` is at least as good as `b` in every objective and
    strictly better in at least one. Identical rows do not dominate each other, so every copy
    of a front point is on the front, as in Optuna's `study.best_trials`. Infinite values are
    allowed and compare as usual.

    Args:
        values: Objective values, shape (n_trials, n_objectives).
        modes: "max" or "min" per objective column.

    Returns:
        A boolean mask of shape (n_trials,), True for rows on the front, in input order.

    Raises:
        ValueError: If `values` is not 2-D, has a column count other than `len(modes)`,
            contains NaN, or a mode is neither "max" nor "min".
    """
    return _front_mask(_to_loss(values, modes))


def hypervolume(
    values: np.ndarray | Sequence[Sequence[float]],
    modes: Sequence[str],
    reference: Sequence[float],
) -> float:
    """Measures the objective space the rows dominate, bounded by a reference point.

    The reference should be worse than every interesting trial in every objective, e.g.
    ROUGE-L 0 and the parameter count of the unshrunk model. Rows that are not strictly
    better than the reference in every objective add nothing. Two objectives use an exact
    sweep; more use recursive slicing, exact but exponential in the worst case, which is fine
    for the few dozen front points a sweep produces.

    Args:
        values: Objective values, shape (n_trials, n_objectives); dominated rows may be
            included and do not change the result.
        modes: "max" or "min" per objective column.
        reference: The reference point, one finite value per objective, in the objectives'
            own units (not negated for "max").

    Returns:
        The hypervolume, 0.0 when no row beats the reference.

    Raises:
        ValueError: If the inputs are malformed as for `pareto_front`, `reference` has the
            wrong length or is not finite, or a row beating the reference is not finite.
    """
    loss = _to_loss(values, modes)
    ref = _to_loss([reference], modes)[0]
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference must be finite, got {list(reference)}")
    better = loss[np.all(loss < ref, axis=1)]
    if not np.all(np.isfinite(better)):
        raise ValueError("hypervolume needs finite objective values")
    return float(_hypervolume_of_losses(better, ref))


def knee(values: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str]) -> int:
    """Picks the front point that best balances the objectives: "the best trade-off".

    Each objective is rescaled over the front to [0, 1], 1 for the front's best value and 0
    for its worst (an objective constant over the front scores 0 everywhere). The knee is the
    front point with the largest sum of rescaled scores, i.e. the one closest to the utopia
    point (1, ..., 1) in L1 distance. With two objectives this is exactly the point farthest
    above the chord joining the front's two extreme points (the maximum-distance-to-chord or
    "kneedle" knee), because those extremes rescale to (1, 0) and (0, 1).

    A front of one point returns that point. Ties, such as a front of two points, go to the
    point best in the first objective, then the next objective, and so on, then to the lowest
    row index (so duplicates resolve to the earliest trial).

    Args:
        values: Objective values, shape (n_trials, n_objectives), dominated rows included.
        modes: "max" or "min" per objective column.

    Returns:
        The row index of the knee in `values` (not a position within the front).

    Raises:
        ValueError: If `values` has no rows, is malformed as for `pareto_front`, or a front
            point is not finite.
    """
    loss = _to_loss(values, modes)
    if len(loss) == 0:
        raise ValueError("knee needs at least one row")
    front_rows = np.flatnonzero(_front_mask(loss))
    front = loss[front_rows]
    if not np.all(np.isfinite(front)):
        raise ValueError("knee needs finite objective values on the front")
    score = _rescale_to_goodness(front).sum(axis=1)
    tied = front_rows[score >= score.max() - _KNEE_TOLERANCE]
    return int(tied[_lexicographic_best(loss[tied])])


def dominated_share(
    point: Sequence[float],
    peers: np.ndarray | Sequence[Sequence[float]],
    modes: Sequence[str],
) -> float:
    """The fraction of `peers` that dominate `point` (0.0 without peers).

    The early-stopping rule's measure: a trial whose intermediate point most others beat in
    every objective at the same step is unlikely to end on the front.

    Args:
        point: One row of objective values.
        peers: Other rows, shape (n_peers, n_objectives).
        modes: "max" or "min" per objective column.

    Raises:
        ValueError: If the inputs are malformed as for `pareto_front`.
    """
    loss = _to_loss(peers, modes)
    if len(loss) == 0:
        return 0.0
    row = _to_loss([point], modes)[0]
    dominating = np.all(loss <= row, axis=1) & np.any(loss < row, axis=1)
    return float(dominating.mean())


def front_ranks(values: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str]) -> np.ndarray:
    """Non-dominated sorting: 0 for the rows on the Pareto front, 1 for the front of the rest,
    and so on (NSGA-II's fronts; MO-ASHA ranks the results at a rung this way).

    Args:
        values: Shape (n_trials, n_objectives).
        modes: "max" or "min" per column.

    Returns:
        An int array of length n_trials.

    Raises:
        ValueError: If the inputs are malformed as for `pareto_front`.
    """
    loss = _to_loss(values, modes)
    ranks = np.full(len(loss), -1, dtype=int)
    rank = 0
    while (ranks < 0).any():
        left = np.flatnonzero(ranks < 0)
        ranks[left[_front_mask(loss[left])]] = rank
        rank += 1
    return ranks


def front_table(
    rows: Sequence[Mapping[str, Any]], objectives: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Keeps the trial rows on the Pareto front, ordered for a CSV or terminal table.

    Args:
        rows: One mapping per finished trial, holding every objective key plus anything else
            (trial id, layers kept, training settings), which is passed through untouched.
        objectives: (key, mode) pairs, e.g. [("rougeL", "max"), ("params", "min")].

    Returns:
        Copies of the front rows, best first by the first objective, ties broken by the
        following objectives and then by input order.

    Raises:
        KeyError: If a row lacks an objective key.
        ValueError: If the objective values or modes are malformed as for `pareto_front`.
    """
    keys = [key for key, _ in objectives]
    modes = [mode for _, mode in objectives]
    values = [[_objective(row, key, i) for key in keys] for i, row in enumerate(rows)]
    loss = _to_loss(np.reshape(values, (len(rows), len(keys))), modes)
    front_rows = np.flatnonzero(_front_mask(loss))
    # np.lexsort sorts by its last key first, and is stable, so equal rows keep input order.
    order = np.lexsort(loss[front_rows].T[::-1])
    return [dict(rows[i]) for i in front_rows[order]]


def _to_loss(values: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str]) -> np.ndarray:
    """Returns `values` as a float matrix with every column to be minimised."""
    bad = [mode for mode in modes if mode not in MODES]
    if bad:
        raise ValueError(f"modes must be 'max' or 'min', got {bad}")
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        array = array.reshape(0, len(modes))
    if array.ndim != 2 or array.shape[1] != len(modes):
        raise ValueError(
            f"values must have shape (n_trials, {len(modes)}) to match modes, got {array.shape}"
        )
    if np.isnan(array).any():
        raise ValueError("values must not contain NaN")
    sign = np.array([-1.0 if mode == "max" else 1.0 for mode in modes])
    return array * sign


def _front_mask(loss: np.ndarray) -> np.ndarray:
    """Marks the rows of a loss matrix that no other row dominates."""
    # One pass per row keeps memory linear in the trial count, unlike an n x n x d broadcast.
    return np.array([not _is_dominated(row, loss) for row in loss], dtype=bool)


def _is_dominated(row: np.ndarray, loss: np.ndarray) -> bool:
    """Tells whether any row of `loss` is no worse than `row` everywhere and better somewhere."""
    no_worse = np.all(loss <= row, axis=1)
    better = np.any(loss < row, axis=1)
    return bool(np.any(no_worse & better))


def _hypervolume_of_losses(loss: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of losses that all lie strictly below `ref`, by slicing the last axis."""
    if len(loss) == 0:
        return 0.0
    # Dropping dominated points and duplicates keeps the recursion small; volume is unchanged.
    loss = np.unique(loss[_front_mask(loss)], axis=0)
    if loss.shape[1] == 1:
        return float(ref[0] - loss[:, 0].min())
    if loss.shape[1] == 2:
        return _hypervolume_2d(loss, ref)
    # Between consecutive values of the last objective, the dominated region is a prism whose
    # cross-section is the (d-1)-D hypervolume of the points already below that slice.
    loss = loss[np.argsort(loss[:, -1], kind="stable")]
    tops = np.append(loss[1:, -1], ref[-1])
    total = 0.0
    for k, top in enumerate(tops):
        depth = top - loss[k, -1]
        if depth > 0:
            total += depth * _hypervolume_of_losses(loss[: k + 1, :-1], ref[:-1])
    return total


def _hypervolume_2d(front: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume of a unique, mutually non-dominated set of losses."""
    # Sorted by the first loss, the second strictly decreases; each point adds the strip
    # between its second loss and the previous point's.
    front = front[np.argsort(front[:, 0])]
    previous = np.append(ref[1], front[:-1, 1])
    return float(np.sum((ref[0] - front[:, 0]) * (previous - front[:, 1])))


def _rescale_to_goodness(front: np.ndarray) -> np.ndarray:
    """Rescales each loss column over the front to [0, 1] with 1 for the lowest loss."""
    worst = front.max(axis=0)
    spread = worst - front.min(axis=0)
    # A constant column carries no trade-off; dividing by 1 leaves it at 0 for every point.
    return (worst - front) / np.where(spread > 0, spread, 1.0)


def _lexicographic_best(loss: np.ndarray) -> int:
    """Position of the row lowest in the first loss, then the next, then earliest."""
    return int(np.lexsort(loss.T[::-1])[0])


def _objective(row: Mapping[str, Any], key: str, index: int) -> Any:
    """Reads one objective from a trial row, naming the row when it is missing."""
    if key not in row:
        raise KeyError(f"row {index} (trial {row.get('trial', '?')}) has no objective {key!r}")
    return row[key]
