"""The search simulator (bench/simulate.py) on a tiny hand-made learning-curve table: its
clock, its compute and its stopping must be right before its ratios mean anything."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench.common import append_row
from bench.simulate import (
    Curve,
    Replay,
    Screen,
    load_curves,
    replay,
    scores_rungs_as_final,
    space_curves,
    stages,
    summarize,
    table_hypervolume,
    trade_off_students,
    with_choice,
)
from search.front.pareto import hypervolume
from search.space.config import config_from_dict
from search.strategy.screen import Screened

# A 2+2 teacher, budget 27 steps, checkpoints at 1, 3, 9 and 27 (the rungs of eta 3).
# Per student: params, setup seconds, and per checkpoint (train s, rung rouge, final rouge).
TINY = {
    (2, 2): (400.0, 2.0, {1: (1.0, 5.0, 6.0), 3: (3.0, 12.0, 13.0), 9: (9.0, 20.0, 21.0),
                          27: (27.0, 30.0, 31.0)}),
    (2, 1): (300.0, 2.0, {1: (1.0, 4.0, 5.0), 3: (3.0, 10.0, 11.0), 9: (9.0, 18.0, 19.0),
                          27: (27.0, 28.0, 29.0)}),
    (1, 2): (300.0, 2.0, {1: (1.0, 1.0, 1.5), 3: (3.0, 2.0, 2.5), 9: (9.0, 3.0, 3.5),
                          27: (27.0, 4.0, 4.5)}),  # dominated by 2+1 at every checkpoint
    (1, 1): (200.0, 2.0, {1: (1.0, 3.0, 3.5), 3: (3.0, 8.0, 8.5), 9: (9.0, 14.0, 14.5),
                          27: (27.0, 22.0, 22.5)}),
}  # fmt: skip
RUNG_EVAL, FINAL_EVAL = 0.5, 1.5  # seconds


@pytest.fixture
def curves(tmp_path):
    path = tmp_path / "curves.csv"
    for (e, d), (params, setup, points) in TINY.items():
        for step, (train, rung, final) in points.items():
            row = {"encoder": e, "decoder": d, "strategy": "sft", "params": params}
            row.update(setup_seconds=setup, step=step, train_seconds=train)
            row.update(rung_eval_seconds=RUNG_EVAL, rung_rougeL=rung)
            row.update(eval_seconds=FINAL_EVAL, rouge1=final, rouge2=final, rougeL=final)
            append_row(path, row)
    return load_curves(path)


def space(**changes):
    raw = {
        "model": "unused",
        "data": {"files": {"train": "unused.jsonl"}},
        "layers": {"encoder": [1, 2], "decoder": [1, 2], "strategy": "sft"},
        "train": {"max_steps": 27},
        "scheduler": {"name": "asha", "reduction_factor": 3, "rungs": 3},
    }
    return config_from_dict({**raw, **changes})


EVERY_STUDENT = [{"encoder": e, "decoder": d} for e, d in TINY]


def full_cost(curve: Curve) -> float:
    """A student run to its end without rungs: start-up, training, the final evaluation."""
    return curve.setup_seconds + curve.checkpoints[27].train_seconds + FINAL_EVAL


def test_a_trial_reports_at_each_rung_after_its_training_and_cheap_evaluations(curves):
    curve = curves[(2, 2, "sft")]
    assert [(s.seconds, s.step, s.rouge, s.final) for s in stages(curve, [3, 9])] == [
        (2.0 + 3.0 + 0.5, 3, 12.0, False),
        (2.0 + 9.0 + 1.0, 9, 20.0, False),
        (2.0 + 27.0 + 1.0 + 1.5, 27, 31.0, True),
    ]
    assert stages(curve, [])[0].seconds == full_cost(curve)


def test_fifo_on_one_worker_spends_every_students_full_cost_and_finds_the_table_front(curves):
    config = with_choice(space(first=EVERY_STUDENT), "random", "fifo", seed=0)
    reference = [0.0, 400.0]
    result = replay(config, curves, workers=1, trials=4, reference=reference)
    assert result.compute == pytest.approx(sum(full_cost(c) for c in curves.values()))
    assert result.makespan == pytest.approx(result.compute)  # one worker: back to back
    assert result.stopped == 0
    assert sorted(result.points) == sorted(
        (c.checkpoints[27].rouge, c.params) for c in curves.values()
    )
    assert result.trace[-1][1] == pytest.approx(table_hypervolume(curves, reference))
    # The trace's compute grows trial by trial, one worker: the sum of the trials so far.
    assert [c for c, _ in result.trace] == sorted(c for c, _ in result.trace)


ASHA = with_choice(space(), "random", "asha", seed=0)
THEN_DOMINATED = [(2, 1, "sft"), (1, 2, "sft")]  # 1+2 is dominated by 2+1 at rung 3


def test_asha_stops_the_dominated_student_at_its_first_rung_and_saves_its_cost(curves):
    # One worker, so 2+1 reported first.
    result = replay(ASHA, curves, 1, 2, [0.0, 400.0], students=THEN_DOMINATED)
    assert result.stopped == 1
    stopped_at = 2.0 + 3.0 + RUNG_EVAL  # start-up, 3 steps, one cheap evaluation
    kept = 2.0 + 27.0 + 2 * RUNG_EVAL + FINAL_EVAL
    assert result.compute == pytest.approx(kept + stopped_at)
    assert result.points == [(29.0, 300.0)]


def test_asha_never_stops_a_first_point_so_the_references_run_their_budget(curves):
    first = [{"encoder": 2, "decoder": 1}, {"encoder": 1, "decoder": 2}]
    config = with_choice(space(first=first), "random", "asha", seed=0)
    result = replay(config, curves, workers=1, trials=2, reference=[0.0, 400.0])
    assert result.students == THEN_DOMINATED
    assert result.stopped == 0 and result.points == [(29.0, 300.0), (4.5, 300.0)]


def test_asha_never_stops_a_smaller_model_for_being_worse_than_bigger_ones(curves):
    students = [(2, 2, "sft"), (2, 1, "sft"), (1, 1, "sft")]
    result = replay(ASHA, curves, 1, 3, [0.0, 400.0], students=students)
    assert result.stopped == 0 and len(result.points) == 3


def test_on_two_workers_the_rule_sees_reports_in_simulated_time(curves):
    # 1+2 and 2+1 start together; 1+2 reaches rung 3 at the same time as 2+1 but is second in
    # the queue (ties go by trial number), so it is judged against 2+1 and stopped.
    result = replay(ASHA, curves, 2, 2, [0.0, 400.0], students=THEN_DOMINATED)
    assert result.stopped == 1
    # Both start at 0: the trace's compute counts the stopped trial and the running one's time.
    assert result.trace[0][0] == pytest.approx(2 * (2.0 + 3.0 + RUNG_EVAL))


def test_compute_to_a_hypervolume_is_where_the_trace_first_reaches_it(curves):
    config = with_choice(space(first=EVERY_STUDENT), "random", "fifo", seed=0)
    result = replay(config, curves, workers=1, trials=4, reference=[0.0, 400.0])
    best = result.trace[-1][1]
    assert result.compute_to(best) == next(c for c, h in result.trace if h >= best)
    assert math.isinf(result.compute_to(best * 1.01))
    first_hv = result.trace[0][1]
    assert result.compute_to(first_hv) == result.trace[0][0]


def test_the_table_hypervolume_is_the_front_of_every_final_score(curves):
    finals = [(c.checkpoints[27].rouge, c.params) for c in curves.values()]
    assert table_hypervolume(curves, [0.0, 400.0]) == hypervolume(
        finals, ["max", "min"], [0.0, 400.0]
    )


def test_the_summary_averages_the_seeds_that_reached_the_target():
    reached = Replay(trace=[(3600.0, 0.5), (7200.0, 0.96)], compute=7200.0, stopped=1, repeats=2)
    also = Replay(trace=[(10800.0, 0.97)], compute=10800.0, makespan=5400.0, stopped=3)
    never = Replay(trace=[(3600.0, 0.9)], compute=3600.0, makespan=1800.0, repeats=4)
    reached.points = [(30.0, 100.0), (27.5, 60.0)]  # 92% of the score at 60% of the size
    also.points = [(30.0, 100.0), (26.9, 60.0), (27.5, 61.0)]  # each just misses
    row = summarize([reached, also, never], best=1.0, full=(30.0, 100.0))
    assert row["reached"] == "2/3"
    assert row["mean"] == pytest.approx(2.5)  # hours: 2 and 3
    assert row["sd"] == pytest.approx(math.sqrt(0.5))
    assert row["final"] == pytest.approx((0.96 + 0.97 + 0.9) / 3)
    assert row["stopped"] == pytest.approx(4 / 3)
    assert row["spent"] == pytest.approx(2.0)  # hours, every seed: (2 + 3 + 1) / 3
    assert row["repeats"] == pytest.approx(2.0)
    assert row["wall"] == pytest.approx(2 / 3)  # hours: (0 + 1.5 + 0.5) / 3
    assert row["trade_off"] == "1/3"


def test_the_trade_off_students_clear_90_percent_of_the_full_score_at_60_percent_of_its_size(
    curves,
):
    # The full 2+2 scores 31 at 400 parameters: 2+1 scores 29 but at 75% of the size, 1+1 is
    # small enough (50%) but scores 22.5. At 28 (90.3%) and 240 parameters (60%) it clears.
    assert trade_off_students(curves) == []
    one = curves[(1, 1, "sft")]
    cleared = replace(one, params=240.0, checkpoints={27: replace(one.checkpoints[27], rouge=28.0)})
    assert trade_off_students({**curves, (1, 1, "sft"): cleared}) == [(1, 1, "sft")]


def test_given_students_a_replay_runs_exactly_those_in_order_under_its_own_scheduler(curves):
    # 2+1 then 1+2 (dominated at its first rung), as fifo ran them: asha runs the same two and
    # stops the second, so it spends less and keeps fifo's front.
    first = [{"encoder": 2, "decoder": 1}, {"encoder": 1, "decoder": 2}]
    fifo = replay(
        with_choice(space(first=first), "random", "fifo", seed=0), curves, 1, 2, [0.0, 400.0]
    )
    assert fifo.students == [(2, 1, "sft"), (1, 2, "sft")] and fifo.stopped == 0
    asha = with_choice(space(), "tpe", "asha", seed=3)  # no first points: the list decides
    again = replay(asha, curves, 1, 2, [0.0, 400.0], students=fifo.students)
    assert again.students == fifo.students
    assert again.stopped == 1
    kept, stopped_at = 2.0 + 27.0 + 2 * RUNG_EVAL + FINAL_EVAL, 2.0 + 3.0 + RUNG_EVAL
    assert again.compute == pytest.approx(kept + stopped_at) and fifo.compute == 2 * full_cost(
        curves[(2, 1, "sft")]
    )
    assert again.trace[-1][1] == fifo.trace[-1][1]


def test_a_repeated_proposal_is_answered_not_run_so_four_trials_cover_four_students(curves):
    result = replay(with_choice(space(), "random", "fifo", seed=0), curves, 2, 4, [0.0, 400.0])
    assert sorted(result.students) == sorted(curves)  # the random sampler proposes repeats too
    assert result.repeats > 0
    assert result.compute == pytest.approx(sum(full_cost(c) for c in curves.values()))


def test_the_simulated_space_is_the_table_cut_to_the_configured_strategies(curves):
    assert space_curves(curves, space()) == curves  # all sft
    both = {**curves, (2, 2, "last"): curves[(2, 2, "sft")]}
    assert set(space_curves(both, space())) == set(curves)
    with pytest.raises(SystemExit, match=r"no students of strategy \['first'\]"):
        space_curves(curves, space(layers={"encoder": [1, 2], "decoder": [1, 2],
                                           "strategy": ["sft", "first"]}))  # fmt: skip


def test_a_screen_costs_its_seconds_first_and_its_picks_run_after_the_first_points(curves):
    # Screened untrained: 2+2 < 2+1 < 1+1 in loss, 1+2 dominated. The knee of that front is
    # 2+1; its neighbours 1+1 and 2+2; 2+2 is the first point, so the picks add 2+1, 1+1.
    losses = {(2, 2): 4.0, (2, 1): 4.5, (1, 2): 9.0, (1, 1): 8.0}
    students = [
        Screened({"strategy": "sft", "encoder": e, "decoder": d}, int(params), 0, losses[e, d])
        for (e, d), (params, _, _) in TINY.items()
    ]
    config = with_choice(space(first=[{"encoder": 2, "decoder": 2}]), "random", "fifo", seed=0)
    screened = replay(config, curves, 1, 3, [0.0, 400.0], screen=Screen(students, 10.0))
    assert screened.students == [(2, 2, "sft"), (2, 1, "sft"), (1, 1, "sft")]
    trials = sum(full_cost(curves[s]) for s in screened.students)
    assert screened.compute == pytest.approx(10.0 + trials)
    assert screened.makespan == pytest.approx(10.0 + trials)  # one worker, after the screen


def misjudged(curves):
    """The table with 1+2 misjudged at its rungs: dominated there by 2+1 (same size), yet the
    best student of its size at the end (30 against 2+1's 29)."""
    one_two = curves[(1, 2, "sft")]
    end = replace(one_two.checkpoints[27], rouge=30.0)
    return {**curves, (1, 2, "sft"): replace(one_two, checkpoints={**one_two.checkpoints, 27: end})}


# Untrained losses whose front (1+1, 1+2, 2+2; 2+1 dominated) has its knee at 1+2.
PICKS_1_2 = {(2, 2): 4.0, (2, 1): 9.0, (1, 2): 4.5, (1, 1): 8.0}


def test_a_screen_pick_misjudged_at_its_rungs_is_given_its_budget_unless_the_sweep_says_so(
    curves,
):
    table = misjudged(curves)
    students = [
        Screened({"strategy": "sft", "encoder": e, "decoder": d}, int(params), 0, PICKS_1_2[e, d])
        for (e, d), (params, _, _) in TINY.items()
    ]
    screen = Screen(students, 0.0)
    first = [{"encoder": 2, "decoder": 1}]  # runs first, and dominates 1+2 at rung 3 and 9
    spared = with_choice(space(first=first), "random", "asha", seed=0)
    result = replay(spared, table, 1, 2, [0.0, 400.0], screen=screen)
    assert result.students == [(2, 1, "sft"), (1, 2, "sft")]  # the first point, then the knee
    assert result.stopped == 0 and (30.0, 300.0) in result.points
    assert result.compute == pytest.approx(2 * (2.0 + 27.0 + 2 * RUNG_EVAL + FINAL_EVAL))
    # With stop_first the picks are mere starting points: the rule stops 1+2 at rung 3.
    stop = space(first=first, scheduler={"name": "asha", "rungs": 3, "stop_first": True})
    stopped = replay(with_choice(stop, "random", "asha", 0), table, 1, 2, [0.0, 400.0],
                     screen=screen)  # fmt: skip
    assert stopped.stopped == 1 and (30.0, 300.0) not in stopped.points


def test_rungs_scored_as_the_final_evaluation_take_the_tables_final_columns(curves):
    curve = curves[(2, 2, "sft")]
    assert [(s.seconds, s.rouge) for s in stages(curve, [3, 9], own_score=True)] == [
        (2.0 + 3.0 + FINAL_EVAL, 13.0),
        (2.0 + 9.0 + 2 * FINAL_EVAL, 21.0),
        (2.0 + 27.0 + 3 * FINAL_EVAL, 31.0),
    ]
    cheap = space()  # rung_examples 50, rung_num_beams 1: the table's rung columns
    assert not scores_rungs_as_final(cheap, 27)
    own = {"name": "asha", "rung_examples": None, "rung_num_beams": cheap.decoding.num_beams}
    assert scores_rungs_as_final(space(scheduler=own), 27)
    # 1+2 is dominated by 2+1 on the cheap rung score and the final one alike, as in the table.
    result = replay(with_choice(space(scheduler=own), "random", "asha", 0), curves, 1, 2,
                    [0.0, 400.0], students=THEN_DOMINATED)  # fmt: skip
    assert result.stopped == 1
    assert result.compute == pytest.approx((2.0 + 27.0 + 3 * FINAL_EVAL) + (2.0 + 3.0 + FINAL_EVAL))
    with pytest.raises(SystemExit, match="not on 20 pairs with 1"):
        scores_rungs_as_final(space(scheduler={"name": "asha", "rung_examples": 20}), 27)
