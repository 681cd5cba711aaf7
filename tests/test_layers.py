"""Layer-selection strategies: the SFT reference table, fallbacks, each rule, and errors."""

from __future__ import annotations

import pytest

from trainables.layers import STRATEGIES, layer_indices, sft_table

# LAYERS_TO_COPY of huggingface/transformers
# examples/research_projects/seq2seq-distillation/make_student.py, written out independently.
REFERENCE_TABLE = {
    12: {
        1: [0],
        2: [0, 6],
        3: [0, 6, 11],
        4: [0, 4, 8, 11],
        6: [0, 2, 4, 7, 9, 11],
        9: [0, 1, 2, 4, 5, 7, 9, 10, 11],
        12: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
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
    6: {1: [0], 2: [0, 5], 3: [0, 2, 5], 4: [0, 1, 3, 5], 6: [0, 1, 2, 3, 4, 5]},
}


def test_sft_table_is_the_reference_table():
    assert sft_table() == REFERENCE_TABLE


def test_sft_table_returns_a_copy():
    sft_table()[12][6].append(99)
    assert layer_indices("sft", 12, 6) == (0, 2, 4, 7, 9, 11)


@pytest.mark.parametrize(
    ("n_parent", "n_keep", "expected"),
    [
        (12, 6, (0, 2, 4, 7, 9, 11)),
        (12, 3, (0, 6, 11)),
        (12, 2, (0, 6)),
        (6, 3, (0, 2, 5)),
        (16, 4, (0, 5, 10, 15)),
        (16, 12, (0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 15)),
    ],
)
def test_sft_uses_the_table(n_parent, n_keep, expected):
    assert layer_indices("sft", n_parent, n_keep) == expected


def test_sft_agrees_with_every_table_entry():
    for n_parent, row in REFERENCE_TABLE.items():
        for n_keep, kept in row.items():
            assert layer_indices("sft", n_parent, n_keep) == tuple(kept)


@pytest.mark.parametrize(
    ("n_parent", "n_keep", "expected"),
    [
        (12, 5, (0, 3, 6, 8, 11)),  # 12 is in the table, 5 is not
        (9, 4, (0, 3, 5, 8)),  # no row for 9-layer parents
        (4, 3, (0, 2, 3)),
        (24, 2, (0, 23)),
        (1, 1, (0,)),
    ],
)
def test_sft_falls_back_to_spread(n_parent, n_keep, expected):
    assert layer_indices("sft", n_parent, n_keep) == expected
    assert layer_indices("spread", n_parent, n_keep) == expected


@pytest.mark.parametrize(
    ("n_parent", "n_keep", "expected"),
    [
        (12, None, (0, 2, 4, 6, 8, 10)),
        (5, None, (0, 2, 4)),
        (1, None, (0,)),
        (12, 3, (0, 2, 4)),  # fewer: the lowest even layers
        (5, 4, (0, 1, 2, 4)),  # more: odd layers added from the bottom
        (6, 6, (0, 1, 2, 3, 4, 5)),
    ],
)
def test_alternate_keeps_even_layers_first(n_parent, n_keep, expected):
    assert layer_indices("alternate", n_parent, n_keep) == expected


@pytest.mark.parametrize(
    ("strategy", "n_parent", "n_keep", "expected"),
    [
        ("first", 12, 3, (0, 1, 2)),
        ("last", 12, 3, (9, 10, 11)),
        ("last", 12, 1, (11,)),
        ("spread", 12, 3, (0, 6, 11)),  # 5.5 rounds up
        ("spread", 12, 4, (0, 4, 7, 11)),
        ("spread", 12, 1, (0,)),
        ("spread", 6, 6, (0, 1, 2, 3, 4, 5)),
        ("spread", 16, 2, (0, 15)),
    ],
)
def test_simple_strategies(strategy, n_parent, n_keep, expected):
    assert layer_indices(strategy, n_parent, n_keep) == expected


@pytest.mark.parametrize("strategy", ["sft", "alternate", "first", "last", "spread"])
def test_every_result_is_ascending_unique_and_sized(strategy):
    for n_parent in range(1, 25):
        for n_keep in range(1, n_parent + 1):
            kept = layer_indices(strategy, n_parent, n_keep)
            assert len(kept) == n_keep
            assert list(kept) == sorted(set(kept))
            assert kept[0] >= 0 and kept[-1] < n_parent
            if strategy == "spread" and n_keep > 1:
                assert (kept[0], kept[-1]) == (0, n_parent - 1)


def test_mask_keeps_true_entries():
    mask = [False, True, True, False, True]
    assert layer_indices("mask", 5, mask=mask) == (1, 2, 4)
    assert layer_indices("mask", 5, n_keep=3, mask=mask) == (1, 2, 4)


def test_strategies_are_listed():
    assert set(STRATEGIES) == {"sft", "alternate", "first", "last", "spread", "mask"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "random", "n_parent": 6, "n_keep": 3}, "unknown layer strategy 'random'"),
        ({"strategy": "first", "n_parent": 0, "n_keep": 1}, "n_parent must be at least 1"),
        ({"strategy": "first", "n_parent": 6}, "n_keep is required"),
        ({"strategy": "spread", "n_parent": 6, "n_keep": 0}, "between 1 and n_parent=6, got 0"),
        ({"strategy": "sft", "n_parent": 6, "n_keep": 7}, "between 1 and n_parent=6, got 7"),
        ({"strategy": "alternate", "n_parent": 6, "n_keep": 7}, "between 1 and n_parent=6"),
        ({"strategy": "mask", "n_parent": 3}, "needs a mask"),
        ({"strategy": "mask", "n_parent": 3, "mask": [True, False]}, "mask has 2 entries"),
        ({"strategy": "mask", "n_parent": 2, "mask": [False, False]}, "keeps no layer"),
        (
            {"strategy": "mask", "n_parent": 2, "n_keep": 2, "mask": [True, False]},
            "n_keep=2 disagrees with the mask, which keeps 1",
        ),
        (
            {"strategy": "first", "n_parent": 2, "n_keep": 1, "mask": [True, False]},
            "only used by the 'mask' strategy",
        ),
    ],
)
def test_errors_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layer_indices(**kwargs)
