"""space.yaml parsing: every shipped file loads, and every problem is reported with its path."""

from pathlib import Path

import pytest
import yaml

from search.space.config import ConfigError, config_from_dict, load_config
from search.space.params import Choice, Fixed, FloatRange, IntRange

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted([REPO / "space.yaml", *REPO.glob("examples/*.yaml")])


def minimal(**extra):
    raw = {
        "model": "some/model",
        "data": {"files": {"train": "t.jsonl", "validation": "v.jsonl"}},
        "layers": {"encoder": {"low": 1, "high": 6}, "decoder": [1, 3]},
    }
    raw.update(extra)
    return raw


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    config = load_config(path)
    assert config.trials >= 1
    assert [o.mode for o in config.objectives] == ["max", "min"]


def test_parameters_become_fixed_choice_or_range():
    raw = minimal(train={"learning_rate": {"low": "1e-4", "high": 3e-3, "log": True}, "seed": 3})
    config = config_from_dict(raw)
    assert config.layers.encoder == IntRange(1, 6)
    assert config.layers.decoder == Choice((1, 3))
    assert config.layers.strategy == Fixed("sft")
    assert config.train.learning_rate == FloatRange(1e-4, 3e-3, log=True)
    assert config.train.seed == Fixed(3)


def test_overrides_are_parsed_as_yaml_and_validated():
    config = config_from_dict(minimal(), ["trials=3", "data.max_train_examples=50", "model=local"])
    assert (config.trials, config.data.max_train_examples, config.model) == (3, 50, "local")
    with pytest.raises(ConfigError, match=r"trials: expected int, got str 'many'"):
        config_from_dict(minimal(), ["trials=many"])
    with pytest.raises(ConfigError, match=r"expected KEY\.PATH=VALUE"):
        config_from_dict(minimal(), ["trials"])


def test_all_problems_are_reported_at_once_with_their_paths():
    raw = minimal(modle="x", trials=0, sampler={"name": "cma"})
    raw["layers"] = {"encoder": {"low": 4, "high": 2}, "decoder": 0, "strategy": ["sft", "zz"]}
    raw["data"]["max_source_length"] = "long"
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    problems = caught.value.problems
    assert len(problems) == 7, problems
    expected = [
        "modle: unknown key",
        "data.max_source_length: expected int",
        "layers.encoder: inverted range, low 4 > high 2",
        "layers.decoder: every side keeps at least one layer, got 0",
        "layers.strategy: unknown strategy 'zz'",
        "sampler.name: unknown sampler 'cma'",
        "trials: must be at least 1, got 0",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), fragment


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layers": {"encoder": 2}}, "layers.decoder: required"),
        (
            {"layers": {"encoder": 1.5, "decoder": 1}},
            "layers.encoder: layer counts must be integers",
        ),
        ({"train": {"learning_rate": {"low": 0.1, "high": 0.1}}}, "empty range"),
        (
            {"train": {"learning_rate": {"low": 0, "high": 1, "log": True}}},
            "log range needs low > 0",
        ),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be more than 0"),
        ({"train": {"warmup_ratio": 1.5}}, "train.warmup_ratio: must be below 1"),
        ({"train": {"distill": [0.5, 1.5]}}, "train.distill: must be at most 1, got 1.5"),
        ({"train": {"distill_temperature": 0}}, "train.distill_temperature: must be more than 0"),
        ({"train": {"distill_hidden": -1.0}}, "train.distill_hidden: must be 0 or more"),
        ({"train": {"distill_hidden_encoder": "yes"}}, "expected true or false, got ['yes']"),
        ({"train": {"targets": ["gold", "silver"]}}, "unknown targets 'silver'"),
        ({"train": {"optimizer": "sgd"}}, "train.optimizer: unknown optimizer 'sgd'"),
        ({"train": {"micro_batch_size": -2}}, "train.micro_batch_size: expected auto or a count"),
        (
            {"train": {"micro_batch_size": "max"}},
            "train.micro_batch_size: expected auto or a count",
        ),
        ({"train": {"gradient_checkpointing": 1}}, "train.gradient_checkpointing: expected true"),
        ({"sampler": {"startup_trials": -1}}, "sampler.startup_trials: must be 0 or more"),
        ({"train": {"max_steps": 0}}, "train: set max_steps or epochs above 0"),
        ({"train": {"batch_size": []}}, "train.batch_size: empty list of choices"),
        ({"objectives": [{"metric": "bleu", "mode": "max"}]}, "unknown metric 'bleu'"),
        ({"objectives": [{"metric": "rougeL", "mode": "up"}]}, "must be max or min"),
        ({"reference_point": {"size_mb": 3}}, "reference_point.size_mb: not one of the objectives"),
        ({"resources": {"cpus": 0}}, "resources.cpus: must be more than 0"),
        ({"keep_weights": "some"}, "keep_weights: one of pareto, all, none"),
        ({"first": [{"encoder": 0}]}, "first[0].encoder: a layer count of at least 1"),
        (
            {"sampler": {"name": "grid"}, "train": {"learning_rate": {"low": 0.1, "high": 0.2}}},
            "the grid sampler needs a list or an integer range",
        ),
        ({"data": {"name": "x", "files": {"train": "t.jsonl"}}}, "give data.name or data.files"),
        ({"data": {"files": {"train": "t.txt"}}}, "unsupported file type"),
        ({"data": {"name": "x", "source_template": "{oops"}}, "not a valid template"),
        ({"data": {}}, "data: name a dataset (data.name) or local files (data.files)"),
        ({"trials": "8"}, "trials: expected int, got str '8'"),
        ({"max_concurrent": None}, "max_concurrent: expected int, got null"),
        ({"scheduler": {"name": "asha", "rungs": 1}}, "scheduler.rungs: at least 2"),
        ({"scheduler": {"rung_examples": 0}}, "scheduler.rung_examples: at least 1"),
        ({"scheduler": {"rung_num_beams": 0}}, "scheduler.rung_num_beams: at least 1"),
        ({"sampler": {"constant_liar": "yes"}}, "sampler.constant_liar: expected bool"),
    ],
)
def test_each_bad_value_is_named(change, message):
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**minimal(), **change})
    assert any(message in p for p in caught.value.problems), caught.value.problems


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(listing)


def test_every_sampler_name_makes_its_optuna_sampler():
    import optuna

    from search.driver.tuner import make_sampler

    expected = {
        "tpe": optuna.samplers.TPESampler,
        "gp": optuna.samplers.GPSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
        "grid": optuna.samplers.GridSampler,
    }
    for name, kind in expected.items():
        config = config_from_dict({**minimal(), "sampler": {"name": name}})
        assert type(make_sampler(config, (6, 6))) is kind, name
    liar = config_from_dict({**minimal(), "sampler": {"constant_liar": False}})
    assert make_sampler(liar, (6, 6))._constant_liar is False
