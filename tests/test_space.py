"""Sampling and planning, without a model: Optuna asks, `plan` turns answers into students."""

import optuna
import pytest

from search.space.config import config_from_dict
from search.space.suggest import InfeasibleError, grid, plan, suggest
from trainables.config import TrainConfig

PARENT = (6, 6)


def sweep_config(**layers):
    return config_from_dict(
        {
            "model": "m",
            "data": {"files": {"train": "t.jsonl", "validation": "v.jsonl"}},
            "layers": {"encoder": {"low": 1, "high": 6}, "decoder": [1, 2, 3], **layers},
            "train": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "max_steps": 20},
        }
    )


def sample(config, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    fixed = suggest(trial, config, PARENT)
    return {**trial.params, **fixed}


def test_suggest_asks_only_for_searched_values():
    config = sweep_config()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    fixed = suggest(trial, config, PARENT)
    assert set(trial.params) == {"encoder", "decoder", "learning_rate"}
    assert fixed["strategy"] == "sft"
    assert fixed["max_steps"] == 20
    assert 1 <= trial.params["encoder"] <= 6
    assert trial.params["decoder"] in (1, 2, 3)
    assert 1e-4 <= trial.params["learning_rate"] <= 1e-2


def test_plan_maps_counts_to_sft_layers():
    values = {"strategy": "sft", "encoder": 6, "decoder": 3, "learning_rate": 0.001, "max_steps": 5}
    trial = plan(values, PARENT)
    assert trial.encoder_layers == (0, 1, 2, 3, 4, 5)
    assert trial.decoder_layers == (0, 2, 5)
    assert trial.train == TrainConfig(learning_rate=0.001, max_steps=5)


def test_mask_strategy_asks_layer_by_layer():
    config = sweep_config(strategy="mask")
    for seed in range(20):
        values = sample(config, seed)
        assert "encoder" not in values
        try:
            trial = plan(values, PARENT)
        except InfeasibleError as err:
            assert "mask keeps no layer" in str(err)
            continue
        expected = tuple(i for i in range(6) if values[f"encoder_keep_{i}"])
        assert trial.encoder_layers == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"strategy": "first", "encoder": 7, "decoder": 1},
            "7 encoder layers asked; the model has",
        ),
        ({"strategy": "first", "encoder": 1, "decoder": 0}, "0 decoder layers asked"),
        (
            {"strategy": "mask", **{f"encoder_keep_{i}": True for i in range(6)}}
            | {f"decoder_keep_{i}": False for i in range(6)},
            "the decoder mask keeps no layer",
        ),
    ],
)
def test_plan_rejects_students_that_cannot_exist(values, message):
    with pytest.raises(InfeasibleError, match=message):
        plan(values, PARENT)


def test_grid_lists_only_searched_values():
    config = config_from_dict(
        {
            "model": "m",
            "data": {"files": {"train": "t.jsonl"}},
            "layers": {"encoder": {"low": 2, "high": 6, "step": 2}, "decoder": [1, 3]},
            "sampler": {"name": "grid"},
        }
    )
    assert grid(config, PARENT) == {"encoder": [2, 4, 6], "decoder": [1, 3]}
