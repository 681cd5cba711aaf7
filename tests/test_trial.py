"""One trial as a plain function call, on the tiny T5 of tests/tiny.py."""

from __future__ import annotations

import time

from tiny import TINY_FILES

import trainables.scoring
import trainables.trial
from trainables.config import DataConfig, DecodingConfig, RungConfig, TrainConfig, TrialConfig
from trainables.data import load_splits
from trainables.tokens import tokenize_splits
from trainables.trial import pack_base, run_trial

DATA = DataConfig(
    files=TINY_FILES,
    max_source_length=48,
    max_target_length=16,
    max_eval_examples=8,
)
LOAD_DELAY = 0.5  # seconds added to loading the base model


def test_startup_seconds_cover_model_loading_and_reach_every_report(
    tiny_t5_path, tmp_path, monkeypatch
):
    base, _, tokenizer = pack_base(str(tiny_t5_path))
    data = tokenize_splits(load_splits(DATA), tokenizer, DATA)
    load_base = trainables.trial.load_base

    def slow_load_base(*args, **kwargs):
        time.sleep(LOAD_DELAY)
        return load_base(*args, **kwargs)

    monkeypatch.setattr(trainables.trial, "load_base", slow_load_base)
    train = TrainConfig(max_steps=4, batch_size=8, eval_every=2)
    config = TrialConfig("sft", (0, 3), (0,), train)
    reports = []
    start = time.perf_counter()
    result = run_trial(
        config,
        base,
        data,
        DecodingConfig(max_new_tokens=8),
        save_dir=tmp_path / "model",
        report=reports.append,
        threads=1,
    )
    wall = time.perf_counter() - start

    startup = result.metrics["startup_seconds"]
    assert LOAD_DELAY < startup < wall
    # Known by the first intermediate report already, and never updated after.
    assert [r["step"] for r in reports] == [2]
    assert reports[0]["startup_seconds"] == startup


def test_a_rung_is_scored_cheaply_and_the_end_as_configured(tiny_t5_path, tmp_path, monkeypatch):
    base, _, tokenizer = pack_base(str(tiny_t5_path))
    data = tokenize_splits(load_splits(DATA), tokenizer, DATA)
    scored = []  # (evaluation pairs, beams) of every evaluation
    evaluate_model = trainables.scoring.evaluate_model

    def counting(model, tokenizer, data, decoding, *args, **kwargs):
        scored.append((len(data.eval_references), decoding.num_beams))
        return evaluate_model(model, tokenizer, data, decoding, *args, **kwargs)

    monkeypatch.setattr(trainables.scoring, "evaluate_model", counting)
    train = TrainConfig(max_steps=6, batch_size=8, eval_every=4)
    rungs = RungConfig(steps=(2,), examples=3, num_beams=1)
    config = TrialConfig("sft", (0, 3), (0,), train, rungs)
    reports = []
    run_trial(
        config,
        base,
        data,
        DecodingConfig(num_beams=2, max_new_tokens=8),
        save_dir=tmp_path / "model",
        report=reports.append,
        threads=1,
    )
    assert [(r["step"], r["rung"]) for r in reports] == [(2, 1), (4, 0)]
    assert scored == [(3, 1), (8, 2), (8, 2)]  # the rung, eval_every's step 4, the end
