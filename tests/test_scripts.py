"""The repo scripts (`scripts/`) on tiny data: the pieces they take from `trainables/`, the
cards they render from templates, and one teacher trained and exported end to end."""

from __future__ import annotations

import gzip
import json
import statistics
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from tiny import TINY_DATA, tiny_t5_dir

from scripts import eval_teacher, make_dataset, train_teacher
from scripts.eval_teacher import evaluate_model, lead_k, lead_predictions, rouge

DEMO_DATA = Path(__file__).parent.parent / "trainables" / "demo" / "data"


def read_jsonl(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def write_demo_dir(path: Path, splits: dict[str, list[dict[str, str]]]) -> Path:
    """A data directory laid out like trainables/demo/data: `<split>.jsonl.gz`."""
    path.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with gzip.open(path / f"{split}.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def test_rouge_equals_the_scripts_former_loop() -> None:
    """The cards' ROUGE (now `trainables.rouge`) is rouge_score's mean F1 x100 with stemming,
    to the last digit, also for multi-sentence text and punctuation."""
    predictions = ["Tools for the Foo format.", "A daemon. It reads PNG images!", "", "x"]
    references = ["tools to read foo files", "small daemon reading PNG images", "a b", "x y z"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = Counter()
    for prediction, reference in zip(predictions, references, strict=True):
        for name, score in scorer.score(reference, prediction).items():
            expected[name] += score.fmeasure
    assert rouge(predictions, references) == {
        name: 100 * total / len(references) for name, total in expected.items()
    }


def test_lead_baseline() -> None:
    assert lead_k(["a b", "a b c d", "a b c d e f"]) == 4
    assert lead_predictions(["one  two three", "one"], 2) == ["one two", "one"]


def test_evaluate_model_scores_the_first_rows_in_file_order(tmp_path: Path) -> None:
    rows = read_jsonl(TINY_DATA / "validation.jsonl")
    train = read_jsonl(TINY_DATA / "train.jsonl")
    data_dir = write_demo_dir(tmp_path / "data", {"train": train, "test": rows})
    model_dir = tiny_t5_dir(tmp_path / "teacher")
    (model_dir / "teacher_recipe.json").write_text(json.dumps({"max_source_tokens": 24}))
    result = evaluate_model(model_dir, data_dir, "test", limit=5, num_beams=2)
    first = rows[:5]
    references = [row["summary"] for row in first]
    k = round(statistics.median(len(row["summary"].split()) for row in train))
    assert result["examples"] == 5
    assert [s["package"] for s in result["samples"]] == [row["package"] for row in first]
    assert [s["reference"] for s in result["samples"]] == references
    predictions = [s["prediction"] for s in result["samples"]]
    assert result["teacher"] == rouge(predictions, references)
    assert result["lead_k"] == k
    assert result["lead"] == rouge(lead_predictions([r["document"] for r in first], k), references)
    assert result["generation"]["num_beams"] == 2
    assert result["generation"]["max_new_tokens"] == 16  # the rest from generation_config.json


def tiny_teacher_config(tmp_path: Path, **changes: object) -> train_teacher.TeacherConfig:
    config = train_teacher.TeacherConfig(
        data=str(tmp_path / "data"),
        work=str(tmp_path / "work"),
        out=str(tmp_path / "out"),
        vocab_size=300,
        d_model=16,
        d_ff=32,
        num_heads=2,
        num_layers=1,
        num_decoder_layers=1,
        max_source_tokens=24,
        max_target_tokens=8,
        batch_size=8,
        steps=4,
        warmup_steps=2,
        eval_every=2,
        eval_examples=4,
    )
    return replace(config, **changes)


def test_curriculum_batch_is_padded_and_fixed_by_seed_and_step(tmp_path: Path) -> None:
    config = tiny_teacher_config(tmp_path, batch_size=3)
    rng = np.random.default_rng(0)
    sources = [list(rng.integers(3, 50, size=n)) for n in (5, 9, 12, 7, 20, 3)]
    data = train_teacher.Encoded(
        sources=sources,
        word_starts=[list(range(0, len(s), 2)) for s in sources],
        leads=[s[:4] for s in sources],
        summaries=[s[:3] for s in sources],
        prefixes={"copy": [60, 61], "lead": [62]},
    )
    batch = train_teacher.curriculum_batch(data, 5, 0.2, config)
    again = train_teacher.curriculum_batch(data, 5, 0.2, config)
    assert all(torch.equal(batch[key], again[key]) for key in batch)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape[0] == labels.shape[0] == 3
    assert torch.equal(mask, (ids != train_teacher.PAD).long())
    for row in range(3):
        source_len, target_len = int(mask[row].sum()), int((labels[row] != -100).sum())
        assert ids[row, source_len - 1] == labels[row, target_len - 1] == train_teacher.EOS
        assert (labels[row, target_len:] == -100).all()
    later = train_teacher.curriculum_batch(data, 6, 0.2, config)
    assert not torch.equal(later["input_ids"], ids) or not torch.equal(later["labels"], labels)


def test_teacher_decays_matrices_but_not_the_position_bias(tmp_path: Path) -> None:
    model = train_teacher.build_model(tiny_teacher_config(tmp_path), vocab_size=40)
    groups = train_teacher.weight_decay_groups(model, 0.01, exempt=train_teacher.NO_DECAY)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    kept = {names[id(p)] for p in groups[1]["params"]}
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (0.01, 0.0)
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert any("relative_attention_bias" in n for n in kept)
    assert not any("relative_attention_bias" in n or "layer_norm" in n for n in decayed)
    assert "shared.weight" in decayed


def sample_results(examples: int) -> dict[str, object]:
    return {
        "examples": examples,
        "lead_k": 6,
        "decode_seconds": 1.5,
        "parameters": 1234567,
        "megabytes": 8.1,
        "samples": [{"package": "7zip", "reference": "file archiver", "prediction": "archiver"}],
        "teacher": {"rouge1": 35.1749, "rouge2": 16.5701, "rougeL": 31.9312},
        "lead": {"rouge1": 25.7211, "rouge2": 9.2749, "rougeL": 23.0249},
        "generation": {"num_beams": 4},
        "validation_by_beams": {1: {"rougeL": 23.4712}, 4: {"rougeL": 29.3888}},
    }


def test_model_card_fills_every_field(tmp_path: Path) -> None:
    config = tiny_teacher_config(tmp_path, steps=16000, max_minutes=55.0)
    recipe = {"trained_steps": 5106, "trained_minutes": 55.1}
    card = train_teacher.model_card(config, recipe, sample_results(50), provisional=False)
    assert "$" not in card and card.startswith("# shrink-sweep demo teacher")
    expected = [
        "Final teacher after 5106 steps.",
        "| teacher | 35.17 | 16.57 | 31.93 |",
        "| lead baseline | 25.72 | 9.27 | 23.02 |",
        "| 7zip | file archiver | archiver |",
        "1 beam(s): 23.47, 4 beam(s): 29.39",
        "- 1,234,567 parameters; 8.1 MB",
        "Trained 5,106 steps x batch 8",
        "up to 16,000 steps or 55.0 min",
        "--split test --limit 50\n```\n",
    ]
    assert [line for line in expected if line not in card] == []
    # Stopped by its time limit: the card ends with a rerun bounded by steps, not minutes.
    assert "--steps 16000" in card and "This run stopped on its 55.0-minute limit" in card
    rerun = card.rsplit("```\n", 2)[1]
    assert rerun.startswith("python -m scripts.train_teacher ") and "--steps 5106" in rerun
    assert "--max-minutes" not in rerun and card.endswith("```\n")
    unlimited = train_teacher.model_card(
        replace(config, max_minutes=0.0), recipe, sample_results(2662), provisional=True
    )
    assert "**PROVISIONAL** export of the checkpoint at step 5106" in unlimited
    assert "stopped on its" not in unlimited
    assert unlimited.endswith("--split test\n```\n")


def test_data_card_fills_every_field() -> None:
    records = {
        "train": [make_dataset.Record("foo", "foo", "Foo reads files and writes them.", "reads")],
        "validation": [make_dataset.Record("bar", "bar", "Bar is a tool.", "tool for bars")],
        "test": [make_dataset.Record("baz", "baz", "Baz does it all.", "does all")] * 2,
    }
    dropped = Counter({"debug symbols": 1200, "empty synopsis": 3})
    baseline = {"rouge1": 25.7211, "rouge2": 9.2749, "rougeL": 23.0249}
    card = make_dataset.data_card(records, dropped, 5000, baseline, 6, "today", "python -m x")
    assert "$" not in card and card.endswith("```\npython -m x\n```\n")
    expected = [
        "- Index date (from the bookworm `InRelease`): today.",
        "| train | 1 | 1 | 6.0 / 6 / 6 | 1.0 / 1 / 1 |",
        "5,000 packages in the index (one description each, first kept); 4 pairs kept.",
        "| debug symbols | 1,200 |\n| empty synopsis | 3 |",
        "## Lead baseline (test split, 2 pairs)",
        "| 25.72 | 9.27 | 23.02 |",
    ]
    assert [line for line in expected if line not in card] == []


def test_make_dataset_lead_baseline_uses_the_median_summary_length() -> None:
    records = [make_dataset.Record("p", "p", "alpha beta gamma delta", "alpha beta")]
    assert make_dataset.lead_baseline(records, 2)["rouge1"] == pytest.approx(100.0)
    assert make_dataset.lead_baseline(records, 4)["rouge1"] == pytest.approx(100 * 2 / 3)


def test_train_teacher_trains_and_exports_a_loadable_teacher(tmp_path: Path) -> None:
    """Two steps of fit, then export on real demo rows (the tokenizer's round-trip check needs
    their characters): the card, recipe and scores are written and the teacher reloads."""
    splits = {}
    for split, n in (("train", 200), ("validation", 8), ("test", 6)):
        with gzip.open(DEMO_DATA / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
            splits[split] = [json.loads(next(handle)) for _ in range(n)]
    write_demo_dir(tmp_path / "data", splits)
    config = tiny_teacher_config(tmp_path, steps=2, eval_every=1)
    train_teacher.main([*train_teacher.command(config).split()[3:], "--test-examples", "6"])
    out, work = Path(config.out), Path(config.work)
    assert (work / "checkpoint.pt").exists()
    curve = (work / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,minutes,train_loss") and len(curve) == 3
    recipe = json.loads((out / "teacher_recipe.json").read_text())
    assert recipe["trained_steps"] == 2 and recipe["d_model"] == 16
    results = json.loads((work / "results-step2.json").read_text())
    assert results["examples"] == 6 and set(results["teacher"]) == {"rouge1", "rouge2", "rougeL"}
    assert set(results["validation_by_beams"]) == {"1", "4"}
    card = (out / "README.md").read_text()
    assert "Final teacher after 2 steps." in card and "--limit 6" in card
    again = eval_teacher.evaluate_model(out, tmp_path / "data", "test", None)
    assert again["teacher"] == results["teacher"]
