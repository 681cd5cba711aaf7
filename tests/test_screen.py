"""The zero-shot screen: which students it scores, what it scores them, and what the sweep
trains first because of it."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_space

from search.driver.preflight import prepare
from search.space.config import ConfigError, config_from_dict
from search.space.suggest import plan
from search.strategy.screen import (
    Screened,
    pick_points,
    points_to_try,
    screen_candidates,
    screen_csv,
    screen_picks,
    screen_students,
)
from trainables.scoring import eval_loss
from trainables.shrink import count_parameters

PARENT = (4, 3)


def config_of(**changes):
    return config_from_dict(tiny_space("unused", **{"trials": 8, **changes}))


def layers_of(values):
    chosen = plan(values, PARENT)
    return chosen.encoder_layers, chosen.decoder_layers


def test_every_student_of_the_space_is_a_candidate_once():
    config = config_of()  # sft, spread, first; 1-4 encoder and 1-3 decoder layers
    candidates = screen_candidates(config, PARENT)
    kept = [layers_of(c) for c in candidates]
    assert len(kept) == len(set(kept))
    every = {
        layers_of({"strategy": s, "encoder": e, "decoder": d})
        for s in ("sft", "spread", "first")
        for e in range(1, 5)
        for d in range(1, 4)
    }
    assert set(kept) == every
    assert candidates[0] == {"strategy": "sft", "encoder": 1, "decoder": 1}
    # The whole model is one student, named by the first strategy listed.
    whole = [c for c in candidates if layers_of(c) == ((0, 1, 2, 3), (0, 1, 2))]
    assert whole == [{"strategy": "sft", "encoder": 4, "decoder": 3}]


def test_mask_students_are_not_screened():
    layers = {"encoder": {"low": 1, "high": 4}, "decoder": 2, "strategy": ["mask", "last"]}
    candidates = screen_candidates(config_of(layers=layers, first=[]), PARENT)
    assert [c["strategy"] for c in candidates] == ["last"] * 4


def screened(*rows):
    """(encoder, decoder, params, loss) rows, all sft."""
    return [
        Screened({"strategy": "sft", "encoder": e, "decoder": d}, params, params // 2, loss)
        for e, d, params, loss in rows
    ]


# A front of five (by params: 1+1, 2+1, 2+2, 3+2, 4+3) whose knee is 2+2, and one dominated.
SCREEN = screened(
    (1, 1, 100, 9.0),
    (2, 1, 150, 6.0),
    (2, 2, 200, 4.0),
    (3, 2, 250, 3.6),
    (4, 3, 400, 3.5),
    (1, 3, 250, 8.0),  # dominated by 2+2
)


def names(picks):
    return [(s.values["encoder"], s.values["decoder"]) for s in picks]


def test_the_picks_are_the_screen_fronts_knee_then_its_smaller_and_larger_neighbours():
    assert names(screen_picks(SCREEN, config_of(first=[]), PARENT)) == [(2, 2), (2, 1), (3, 2)]


def test_no_more_students_are_picked_than_the_trials_leave_room_for():
    assert names(screen_picks(SCREEN, config_of(trials=2), PARENT)) == [(2, 2)]  # 1 first
    assert screen_picks(SCREEN, config_of(trials=1), PARENT) == []


def test_the_first_points_and_students_that_break_a_size_bound_are_not_picked():
    config = config_of(first=[{"encoder": 2, "decoder": 1, "strategy": "sft"}])
    assert names(screen_picks(SCREEN, config, PARENT)) == [(2, 2), (3, 2)]
    # Under 210 parameters the front is 1+1, 2+1, 2+2: its knee is 2+1 (the first point).
    bounded = config_of(first=[], constraints=[{"metric": "params", "max": 210}])
    assert names(screen_picks(SCREEN, bounded, PARENT)) == [(2, 1), (1, 1), (2, 2)]
    none_fits = config_of(constraints=[{"metric": "params_non_embedding", "max": 10}])
    assert screen_picks(SCREEN, none_fits, PARENT) == []


def test_the_points_to_try_are_the_first_points_then_the_picks_searched_values():
    config = config_of(first=[{"encoder": 4, "decoder": 3}])
    assert points_to_try(config, SCREEN, PARENT) == [
        {"encoder": 4, "decoder": 3},
        {"strategy": "sft", "encoder": 2, "decoder": 2},
        {"strategy": "sft", "encoder": 2, "decoder": 1},
        {"strategy": "sft", "encoder": 3, "decoder": 2},
    ]
    fixed = config_of(first=[], layers={"encoder": [1, 2, 3, 4], "decoder": [1, 2, 3]})
    assert points_to_try(fixed, SCREEN, PARENT)[0] == {"encoder": 2, "decoder": 2}
    assert points_to_try(config, [], PARENT) == [{"encoder": 4, "decoder": 3}]


def test_the_screen_table_has_a_row_per_student():
    lines = screen_csv(SCREEN[:2]).splitlines()
    assert lines == [
        "strategy,encoder,decoder,params,params_non_embedding,loss",
        "sft,1,1,100,50,9",
        "sft,2,1,150,75,6",
    ]


def test_a_negative_screen_is_refused():
    with pytest.raises(ConfigError, match=r"sampler\.screen: must be 0 or more, got -1"):
        config_of(sampler={"screen": -1})


def test_each_student_is_scored_untrained_on_the_first_pairs(tiny_t5_path):
    config = config_from_dict(
        tiny_space(
            tiny_t5_path,
            sampler={"screen": 5},
            layers={"encoder": [2, 4], "decoder": 3, "strategy": ["sft", "first"]},
        )
    )
    prepared = prepare(config)
    scores, seconds = screen_students(config, prepared)
    assert [s.values for s in scores] == [
        {"strategy": "sft", "encoder": 2, "decoder": 3},
        {"strategy": "sft", "encoder": 4, "decoder": 3},
        {"strategy": "first", "encoder": 2, "decoder": 3},  # sft keeps 0, 3; first 0, 1
    ]
    assert seconds > 0
    # The whole model's score is the parent's own loss on the first five evaluation pairs.
    from transformers import AutoModelForSeq2SeqLM

    parent = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_path)
    whole = scores[1]
    assert whole.params == count_parameters(parent).total
    assert whole.params_non_embedding == count_parameters(parent).non_embedding
    with torch.no_grad():
        expected = eval_loss(parent, prepared.data.eval_head(5), pad_token_id=0)
    assert whole.loss == pytest.approx(expected, rel=1e-5)
    assert all(math.isfinite(s.loss) and s.params < whole.params for s in (scores[0], scores[2]))


def test_the_picks_as_points_are_what_the_sweep_tries_after_the_first_points():
    config = config_of(first=[{"encoder": 4, "decoder": 3}])
    assert pick_points(config, SCREEN, PARENT) == points_to_try(config, SCREEN, PARENT)[1:]
    assert pick_points(config, [], PARENT) == []
