"""The benchmarks' own logic, on made-up tables: what bench/search.py computes must be right
before its ratios mean anything."""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace

import pytest
import torch
import yaml

from bench.common import append_row, fixed_train_values, measure_in_pool, read_rows
from bench.int8 import agreement, turn_order
from bench.overhead import parse_students, report, schedule
from bench.search import compare, load_table, search_hypervolume
from search.front.pareto import hypervolume
from search.space.config import config_from_dict
from search.space.params import Fixed

# Every student of a 3+3 teacher: ROUGE-L grows with layers, parameters too.
TABLE = {
    (e, d): (10.0 * e + 5.0 * d, 100.0 + 20 * e + 30 * d) for e in (1, 2, 3) for d in (1, 2, 3)
}


def space(**changes):
    raw = {
        "model": "unused",
        "data": {"files": {"train": "unused.jsonl"}},
        "layers": {"encoder": {"low": 1, "high": 3}, "decoder": {"low": 1, "high": 3}},
    }
    return config_from_dict({**raw, **changes})


def test_a_long_search_reaches_the_whole_tables_hypervolume_and_a_short_one_does_not():
    config = space(sampler={"name": "random", "seed": 0})
    reference = [0.0, TABLE[(3, 3)][1]]
    whole = hypervolume(list(TABLE.values()), ["max", "min"], reference)
    assert search_hypervolume(config, TABLE, trials=80) == pytest.approx(whole)
    assert 0 < search_hypervolume(config, TABLE, trials=2) < whole


def test_first_points_are_tried_first():
    # The full model alone is as big as the reference point: it adds no hypervolume.
    config = space(first=[{"encoder": 3, "decoder": 3}])
    assert search_hypervolume(config, TABLE, trials=1) == 0.0
    config = space(first=[{"encoder": 1, "decoder": 1}])
    rouge, params = TABLE[(1, 1)]
    expected = rouge * (TABLE[(3, 3)][1] - params)
    assert search_hypervolume(config, TABLE, trials=1) == pytest.approx(expected)


def test_compare_runs_both_samplers_with_the_same_seeds():
    means = compare(space(sampler={"name": "tpe", "seed": 0}), TABLE, trials=4, seeds=3)
    assert set(means) == {"tpe", "random"}
    # TPE samples at random until its startup trials are done: alike for 4 trials.
    assert means["tpe"] == pytest.approx(means["random"])


def test_tables_round_trip_and_an_empty_table_says_how_to_make_one(tmp_path):
    path = tmp_path / "table.csv"
    with pytest.raises(SystemExit, match=r"bench\.layer_table"):
        load_table(path)
    for (e, d), (rouge, params) in TABLE.items():
        append_row(path, {"encoder": e, "decoder": d, "strategy": "sft", "rougeL": rouge,
                          "params": params})  # fmt: skip
    assert len(read_rows(path)) == 9
    assert load_table(path) == (TABLE, "sft")
    assert next(csv.reader(path.open())) == ["encoder", "decoder", "strategy", "rougeL", "params"]


_WORKER_NAME = "not set up"


def _set_up_worker(name: str) -> None:
    global _WORKER_NAME
    _WORKER_NAME = name


def _measure_square(n: int) -> dict | list[dict]:
    """One row per task, two for task 3 (as a learning curve gives a row per checkpoint)."""
    row = {"n": n, "square": n * n, "worker": _WORKER_NAME}
    return [row, {**row, "square": -1}] if n == 3 else row


def test_the_pool_appends_each_tasks_rows_as_it_finishes_from_set_up_workers(tmp_path, capsys):
    table = tmp_path / "table.csv"
    append_row(table, {"n": 1, "square": 1, "worker": "earlier run"})  # a resumed table
    describe = lambda rows: f"n={rows[0]['n']}: {len(rows)} row(s)"  # noqa: E731
    setup = (_set_up_worker, ("bench",))
    measure_in_pool(table, [(2,), (3,)], _measure_square, describe, 1, setup)
    rows = sorted((r["n"], r["square"], r["worker"]) for r in read_rows(table))
    assert rows == [("1", "1", "earlier run"), ("2", "4", "bench"), ("3", "-1", "bench"),
                    ("3", "9", "bench")]  # fmt: skip
    assert sorted(capsys.readouterr().out.splitlines()) == ["n=2: 1 row(s)", "n=3: 2 row(s)"]


def test_benchmarks_refuse_a_searched_training_setting():
    config = space(train={"learning_rate": [1e-3, 1e-4]})
    with pytest.raises(ValueError, match=r"train\.learning_rate is searched"):
        fixed_train_values(config)
    fixed = replace(config, train=replace(config.train, learning_rate=Fixed(1e-3)))
    assert fixed_train_values(fixed)["learning_rate"] == 1e-3


def test_the_schedule_starts_each_trial_on_the_first_free_slot():
    assert schedule([10.0, 10.0, 10.0, 10.0], 2) == 20.0
    # 6 and 4 start together; 3 follows the 4 (ends at 7), 3 more follows the 6 (ends at 9).
    assert schedule([6.0, 4.0, 3.0, 3.0], 2) == 9.0
    assert schedule([5.0, 1.0], 1) == 6.0


def test_the_overhead_report_puts_the_target_ratio_first():
    lines = report(
        prep=10.0, loop=[60.0, 40.0, 30.0, 30.0], wall=88.0, swept=[66, 44, 33, 33], slots=2
    )
    assert "= 1.100  (target <= 1.10: met)" in lines[2]
    # 10 s preparation + the schedule: 60 | 40 + 30, then the last 30 after the 60: 10 + 90
    assert lines[3].endswith("= 0.880")
    assert lines[4].endswith("= 1.100")
    slower = report(prep=10.0, loop=[60.0, 40.0, 30.0, 30.0], wall=89.0, swept=[1.0], slots=2)
    assert "NOT met" in slower[2]


def test_students_are_read_as_layer_pairs():
    assert parse_students("6+6, 4+3") == [(6, 6), (4, 3)]
    with pytest.raises(argparse.ArgumentTypeError, match="'6-3' is not ENCODER"):
        parse_students("6-3")


def test_int8_paths_take_turns_and_agreement_counts_positions():
    names = ["fp32", "dynamic", "ao w8a8", "ao w8"]
    orders = [turn_order(names, turn) for turn in range(len(names))]
    assert [order[0] for order in orders] == names  # over 4 sources each path goes first once
    assert all(sorted(order) == sorted(names) for order in orders)
    reference = [torch.tensor([[0, 5, 6, 7]]), torch.tensor([[0, 8, 9]])]
    outputs = [torch.tensor([[0, 5, 1, 7]]), torch.tensor([[0, 8, 9]])]
    assert agreement(reference, outputs) == 6 / 7
    assert agreement(reference, reference) == 1.0


def test_the_second_domain_writes_the_opening_sentence_from_the_rest(tmp_path):
    from bench.second_domain import split_pair, write_space

    record = {
        "package": "abx",
        "summary": "ABX testing",
        "document": "abx is a program for performing software-based audio ABX testing on "
        "GNU/Linux systems. ABX test is a statistical test for assessing whether you are able "
        "to tell audible differences between two samples.",
    }
    pair = split_pair(record)
    assert pair["summary"] == (
        "abx is a program for performing software-based audio ABX testing on GNU/Linux systems."
    )
    assert (
        pair["document"].startswith("ABX test is a statistical test") and pair["package"] == "abx"
    )
    assert split_pair({**record, "document": "One sentence only, nothing after it."}) is None
    space = yaml.safe_load(write_space(tmp_path).read_text())
    assert "name" not in space["data"] and set(space["data"]["files"]) == {"train", "validation"}
    assert space["train"]["targets"] == "auto"  # the shipped space.yaml's recipe, unchanged
