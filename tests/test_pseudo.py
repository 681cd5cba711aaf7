"""Pseudo-labels: made once from the base model, cached by what they depend on, and what a
trial with `train.targets: pseudo` trains on (the tiny T5 of tests/tiny.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_space

import trainables.pseudo
import trainables.train
from search.driver.preflight import prepare
from search.space.config import config_from_dict, load_config
from trainables.config import DecodingConfig, TrainConfig, TrialConfig
from trainables.fingerprint import model_key
from trainables.pseudo import (
    add_pseudo_labels,
    in_process,
    pseudo_sources,
    shard_plan,
    shard_texts,
)
from trainables.tokens import TokenRows
from trainables.trial import load_base, run_trial

PSEUDO_EXAMPLES = 10
DEFAULT_SPACE = Path(__file__).resolve().parents[1] / "space.yaml"


def pseudo_config(model, **decoding):
    space = tiny_space(model, decoding={"max_new_tokens": 8, **decoding})
    space["data"]["pseudo_examples"] = PSEUDO_EXAMPLES
    space["train"]["targets"] = ["gold", "pseudo"]
    return config_from_dict(space)


@pytest.fixture(scope="module")
def labeled(tiny_t5_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("pseudo-labels")
    prepared = prepare(pseudo_config(tiny_t5_path), pseudo_label_cache=cache)
    return prepared, cache


def test_the_labels_are_the_base_models_summaries_of_a_sample_of_sources(tiny_t5_path, labeled):
    prepared, _ = labeled
    data = prepared.data
    assert len(data.pseudo_sources) == len(data.pseudo_labels) == PSEUDO_EXAMPLES
    assert list(data.pseudo_sources) == sorted(set(data.pseudo_sources))
    assert data.pseudo_sources.max() < len(data.train_input_ids)
    model, tokenizer = load_base(str(tiny_t5_path))
    sources = [data.train_input_ids[i] for i in data.pseudo_sources]
    texts = [""] * len(sources)  # shard after shard in this process, as the workers do
    for shard in shard_plan([len(s) for s in sources]):
        rows = [sources[i] for i in shard]
        made = shard_texts(model, tokenizer, rows, DecodingConfig(max_new_tokens=8))
        for i, text in zip(shard, made, strict=True):
            texts[i] = text
    expected = tokenizer(text_target=texts, truncation=True, max_length=16)["input_ids"]
    assert [list(row) for row in data.pseudo_labels] == expected
    gold = [list(data.train_labels[i]) for i in data.pseudo_sources]
    assert [list(row) for row in data.pseudo_labels] != gold


def test_a_second_sweep_reuses_them_and_a_new_decoding_makes_new_ones(tiny_t5_path, labeled):
    prepared, cache = labeled
    (first,) = cache.iterdir()
    made = first.stat().st_mtime_ns
    again = prepare(pseudo_config(tiny_t5_path), pseudo_label_cache=cache)
    assert [p.name for p in cache.iterdir()] == [first.name]
    assert first.stat().st_mtime_ns == made
    assert np.array_equal(again.data.pseudo_labels.values, prepared.data.pseudo_labels.values)

    beams = prepare(pseudo_config(tiny_t5_path, num_beams=2), pseudo_label_cache=cache)
    assert len(list(cache.iterdir())) == 2
    assert len(beams.data.pseudo_labels) == PSEUDO_EXAMPLES


def test_a_sweep_of_gold_targets_makes_none(tiny_t5_path, tmp_path):
    config = config_from_dict(tiny_space(tiny_t5_path))
    assert prepare(config, pseudo_label_cache=tmp_path / "cache").data.pseudo_labels is None
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("targets", "gold_pairs"), [("pseudo", 0), ("both", 1)])
def test_a_trial_trains_on_the_targets_it_is_told(
    labeled, tmp_path, monkeypatch, targets, gold_pairs
):
    prepared, _ = labeled
    seen = []

    def fine_tune(model, data, config, **kwargs):
        seen.append(data)
        return real_fine_tune(model, data, config, **kwargs)

    real_fine_tune = trainables.train.fine_tune
    monkeypatch.setattr(trainables.train, "fine_tune", fine_tune)
    config = TrialConfig("sft", (0, 3), (0,), TrainConfig(max_steps=2, targets=targets))
    run_trial(config, prepared.base, prepared.data, DecodingConfig(max_new_tokens=4),
              save_dir=tmp_path / "model", threads=1)  # fmt: skip
    (data,) = seen
    gold = prepared.data
    pseudo_pairs = list(zip(data.train_input_ids, data.train_labels, strict=True))[-10:]
    assert len(data.train_labels) == gold_pairs * len(gold.train_labels) + PSEUDO_EXAMPLES
    for (source, label), i, pseudo in zip(
        pseudo_pairs, gold.pseudo_sources, gold.pseudo_labels, strict=True
    ):
        assert np.array_equal(source, gold.train_input_ids[i])
        assert np.array_equal(label, pseudo)


def test_pseudo_targets_without_pseudo_labels_is_an_error(labeled):
    data = labeled[0].data
    gold_only = type(data)(
        data.train_input_ids, data.train_labels, data.eval_input_ids, data.eval_labels, ()
    )
    with pytest.raises(ValueError, match="no pseudo-labels"):
        gold_only.with_targets("pseudo")


def test_sources_are_all_or_a_seeded_sample():
    assert list(pseudo_sources(5, None)) == [0, 1, 2, 3, 4]
    assert list(pseudo_sources(5, 9)) == [0, 1, 2, 3, 4]
    sample = pseudo_sources(1000, 20)
    assert len(set(sample)) == 20
    assert np.array_equal(sample, pseudo_sources(1000, 20))


def test_token_rows_take_select_and_add():
    rows = TokenRows.from_lists([[1, 2], [3], [4, 5, 6]])
    assert [list(r) for r in rows.take([2, 0])] == [[4, 5, 6], [1, 2]]
    assert [list(r) for r in rows.take([1]) + rows] == [[3], [1, 2], [3], [4, 5, 6]]
    picked = rows.select([2, 0])  # the same rows as take, in the same storage
    assert [list(r) for r in picked] == [[4, 5, 6], [1, 2]] and picked.values is rows.values
    assert picked.lengths.tolist() == [3, 2] and len(picked) == 2
    assert [list(r) for r in picked.select([1])] == [[1, 2]]
    joined = picked + rows.select([1])  # one storage: still a selection
    assert [list(r) for r in joined] == [[4, 5, 6], [1, 2], [3]] and joined.values is rows.values
    assert [list(r) for r in joined.head(2)] == [[4, 5, 6], [1, 2]]
    assert [list(r) for r in joined.take([2])] == [[3]] and joined.take([2]).index is None
    copied = picked + TokenRows.from_lists([[7]])  # two storages: copied into one
    assert [list(r) for r in copied] == [[4, 5, 6], [1, 2], [7]] and copied.index is None


@pytest.mark.parametrize("targets", ["pseudo", "both"])
def test_a_trial_picks_its_targets_without_copying_a_token(labeled, targets):
    data = pickle.loads(pickle.dumps(labeled[0].data))  # as a trial is sent it
    picked = data.with_targets(targets)
    assert picked.train_input_ids.values is data.train_input_ids.values
    assert picked.train_labels.values is data.train_labels.values is data.pseudo_labels.values
    gold = len(data.train_labels) if targets == "both" else 0
    assert len(picked.train_labels) == len(picked.train_input_ids) == gold + PSEUDO_EXAMPLES


def test_the_default_sweep_uses_the_shipped_demo_labels(tmp_path, monkeypatch):
    def shard_texts(*args, **kwargs):
        raise AssertionError("the default sweep's pseudo-labels were not found")

    monkeypatch.setattr(trainables.pseudo, "shard_texts", shard_texts)
    # As `targets: auto` trains on them for the demo teacher (the slow default-sweep test
    # checks that choice); chosen here, so that nothing generates a summary.
    config = load_config(DEFAULT_SPACE, ["train.targets=pseudo"])
    data = prepare(config, pseudo_label_cache=tmp_path / "cache").data
    assert len(data.pseudo_labels) == config.data.pseudo_examples == 8000
    assert not (tmp_path / "cache").exists()


def test_labels_shipped_for_another_model_are_named_before_new_ones_are_made(
    tiny_t5_path, labeled, tmp_path, monkeypatch, caplog
):
    _, cache = labeled
    monkeypatch.setattr(trainables.pseudo, "SHIPPED", cache)  # the tiny model's, as if shipped
    model, tokenizer = load_base(str(tiny_t5_path))
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1e-3
    model.save_pretrained(tmp_path / "retrained")
    tokenizer.save_pretrained(tmp_path / "retrained")
    with caplog.at_level("WARNING"):
        prepare(pseudo_config(tmp_path / "retrained"), pseudo_label_cache=tmp_path / "cache")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    (shipped,) = [path for path in cache.iterdir() if str(path) in warning]
    assert f"the shipped pseudo-labels {shipped} were made for this sweep's decoding" in warning
    assert "but another weights; generating new ones" in warning
    assert len(list((tmp_path / "cache").iterdir())) == 1


class Interrupted(Exception):
    """The sweep killed half-way through labeling."""


def test_labeling_stopped_half_way_makes_only_the_missing_shards(tiny_t5_path, tmp_path):
    data = prepare(config_from_dict(tiny_space(tiny_t5_path))).data
    model, tokenizer = load_base(str(tiny_t5_path))
    key = model_key(model, tokenizer)
    config, decoding = pseudo_config(tiny_t5_path).data, DecodingConfig(max_new_tokens=8)
    make = in_process(model, tokenizer, decoding)
    made: list[int] = []

    def stopped_after_four(shards, on_shard):
        def keep(index, texts):
            if len(made) == 4:
                raise Interrupted
            made.append(index)
            on_shard(index, texts)

        make(shards, keep)

    def counted(shards, on_shard):
        made.extend(shards)
        make(shards, on_shard)

    cache = tmp_path / "cache"
    with pytest.raises(Interrupted):
        add_pseudo_labels(data, tokenizer, key, config, decoding, cache, stopped_after_four)
    (shards,) = cache.iterdir()
    assert len(list(shards.iterdir())) == 4 and not list(cache.glob("*.json"))

    made.clear()
    resumed, source = add_pseudo_labels(data, tokenizer, key, config, decoding, cache, counted)
    assert (source.shards_kept, source.shards_made, len(made)) == (4, 6, 6)
    assert [p.suffix for p in cache.iterdir()] == [".json"]  # the shards are gone
    whole, _ = add_pseudo_labels(data, tokenizer, key, config, decoding, None, make)
    assert np.array_equal(resumed.pseudo_labels.values, whole.pseudo_labels.values)
