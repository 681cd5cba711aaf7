"""Which layers of a parent stack a student keeps: index arithmetic only, no torch.

Every strategy returns ascending, unique indices into the parent's layer list, ready for
`trainables.shrink.shrink`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

STRATEGIES = ("sft", "alternate", "first", "last", "spread", "mask")

# Teacher layers -> student layers -> teacher layers to copy, as in the SFT paper's reference
# code (huggingface/transformers examples/research_projects/seq2seq-distillation/make_student.py,
# LAYERS_TO_COPY, imported by distillation.py there). 12: BART, 16: Pegasus, 6: Marian. The
# choices keep the first and the last layer and favour the top of the stack.
_SFT_TABLE: dict[int, dict[int, list[int]]] = {
    12: {
        1: [0],
        2: [0, 6],
        3: [0, 6, 11],
        4: [0, 4, 8, 11],
        6: [0, 2, 4, 7, 9, 11],
        9: [0, 1, 2, 4, 5, 7, 9, 10, 11],
        12: list(range(12)),
    },
    16: {
        1: [0],
        2: [0, 15],
        3: [0, 8, 15],
        4: [0, 5, 10, 15],
        6: [0, 3, 6, 9, 12, 15],
        8: [0, 2, 4, 6, 8, 10, 12, 15],
        9: [0, 1, 3, 5, 7, 9, 11, 13, 15],
        12: [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 15],
        16: list(range(16)),
    },
    6: {1: [0], 2: [0, 5], 3: [0, 2, 5], 4: [0, 1, 3, 5], 6: list(range(6))},
}


def sft_table() -> dict[int, dict[int, list[int]]]:
    """Return a copy of the SFT reference table.

    Returns:
        `{n_parent: {n_keep: [indices]}}`; callers may mutate it freely.
    """
    return copy.deepcopy(_SFT_TABLE)


def layer_indices(
    strategy: str,
    n_parent: int,
    n_keep: int | None = None,
    mask: Sequence[bool] | None = None,
) -> tuple[int, ...]:
    """Choose which of a parent's `n_parent` layers a student keeps.

    Strategies:
        - `sft`: the SFT reference table (see `sft_table`); `spread` where it has no entry.
        - `alternate`: the even-indexed layers 0, 2, 4, ..., as the original shrink code copied
          them. `n_keep` defaults to ceil(n_parent / 2); a smaller `n_keep` keeps the lowest even
          layers, a larger one adds odd layers from the bottom (1, 3, ...).
        - `first` / `last`: the bottom / top `n_keep` layers.
        - `spread`: `n_keep` evenly spaced layers, first and last included (index
          i * (n_parent - 1) / (n_keep - 1), halves rounded up); `n_keep == 1` keeps layer 0.
        - `mask`: the layers whose entry in `mask` is true.

    Args:
        strategy: One of `STRATEGIES`.
        n_parent: Number of layers in the parent stack.
        n_keep: Number of layers to keep. Required except for `alternate` and `mask`; with
            `mask` it may be given and must equal the number of true entries.
        mask: `n_parent` booleans, only with the `mask` strategy.

    Returns:
        Ascending, unique indices into the parent's layers.

    Raises:
        ValueError: For an unknown strategy, `n_parent < 1`, `n_keep` missing or outside
            1..n_parent, a mask given to another strategy, or a mask of the wrong length or
            keeping no layer.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown layer strategy {strategy!r}; expected one of {STRATEGIES}")
    if n_parent < 1:
        raise ValueError(f"n_parent must be at least 1, got {n_parent}")
    if strategy == "mask":
        return _from_mask(n_parent, n_keep, mask)
    if mask is not None:
        raise ValueError(f"a mask is only used by the 'mask' strategy, not {strategy!r}")
    if strategy == "alternate" and n_keep is None:
        n_keep = math.ceil(n_parent / 2)
    _check_n_keep(n_parent, n_keep)
    return _PICKERS[strategy](n_parent, n_keep)


def _check_n_keep(n_parent: int, n_keep: int | None) -> None:
    if n_keep is None:
        raise ValueError("n_keep is required for this strategy")
    if not 1 <= n_keep <= n_parent:
        raise ValueError(f"n_keep must be between 1 and n_parent={n_parent}, got {n_keep}")


def _from_mask(n_parent: int, n_keep: int | None, mask: Sequence[bool] | None) -> tuple[int, ...]:
    if mask is None:
        raise ValueError("the 'mask' strategy needs a mask")
    if len(mask) != n_parent:
        raise ValueError(f"mask has {len(mask)} entries but the parent has {n_parent} layers")
    kept = tuple(i for i, keep in enumerate(mask) if keep)
    if not kept:
        raise ValueError("mask keeps no layer; at least one is needed")
    if n_keep is not None and n_keep != len(kept):
        raise ValueError(f"n_keep={n_keep} disagrees with the mask, which keeps {len(kept)}")
    return kept


def _sft(n_parent: int, n_keep: int) -> tuple[int, ...]:
    row = _SFT_TABLE.get(n_parent, {})
    if n_keep in row:
        return tuple(row[n_keep])
    return _spread(n_parent, n_keep)


def _alternate(n_parent: int, n_keep: int) -> tuple[int, ...]:
    order = [*range(0, n_parent, 2), *range(1, n_parent, 2)]
    return tuple(sorted(order[:n_keep]))


def _first(n_parent: int, n_keep: int) -> tuple[int, ...]:
    return tuple(range(n_keep))


def _last(n_parent: int, n_keep: int) -> tuple[int, ...]:
    return tuple(range(n_parent - n_keep, n_parent))


def _spread(n_parent: int, n_keep: int) -> tuple[int, ...]:
    if n_keep == 1:
        return (0,)
    # floor(i * (n_parent - 1) / (n_keep - 1) + 1/2) in integers: exact, and halves round up
    # (round() would round them to even) so the indices stay strictly increasing.
    span, gaps = n_parent - 1, n_keep - 1
    return tuple((2 * i * span + gaps) // (2 * gaps) for i in range(n_keep))


_PICKERS = {
    "sft": _sft,
    "alternate": _alternate,
    "first": _first,
    "last": _last,
    "spread": _spread,
}
