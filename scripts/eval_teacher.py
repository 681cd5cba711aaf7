"""Evaluate a saved teacher (or the lead baseline) on a split of the demo dataset.

    python scripts/eval_teacher.py --model trainables/demo/teacher --split test

Decoding uses the model's generation_config.json unless overridden. ROUGE is the
`rouge_score` F1 with stemming, x100, one synopsis per example.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path
from typing import Any

SOURCE_FORMAT = "{package}: {document}"


def load_split(data_dir: Path, split: str, limit: int | None = None) -> list[dict[str, str]]:
    """Read `<split>.jsonl.gz`; the first `limit` rows (file order is deterministic)."""
    with gzip.open(data_dir / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return rows[:limit] if limit else rows


def source_text(row: dict[str, str]) -> str:
    """The teacher's input for the synopsis task: `"<package>: <document>"`."""
    return SOURCE_FORMAT.format(package=row["package"], document=row["document"])


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 x100 with stemming."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references, strict=True):
        for name, score in scorer.score(reference, prediction).items():
            totals[name] += score.fmeasure
    return {name: 100 * total / max(len(references), 1) for name, total in totals.items()}


def lead_k(train_rows: list[dict[str, str]]) -> int:
    """k for the lead baseline: the median training-summary length in words."""
    return round(statistics.median(len(row["summary"].split()) for row in train_rows))


def lead_predictions(rows: list[dict[str, str]], k: int) -> list[str]:
    return [" ".join(row["document"].split()[:k]) for row in rows]


def generate(
    model: Any,
    tokenizer: Any,
    sources: list[str],
    max_source_tokens: int,
    batch_size: int = 64,
    **generate_kwargs: Any,
) -> list[str]:
    """Decode sources in batches (sorted by length so padding stays small)."""
    import torch

    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: list[str] = [""] * len(sources)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [sources[i] for i in chunk],
                max_length=max_source_tokens,
                truncation=True,
                padding=True,
                return_tensors="pt",
            )
            generated = model.generate(**batch, **generate_kwargs)
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i, text in zip(chunk, texts, strict=True):
                outputs[i] = text.strip()
    return outputs


def evaluate_model(
    model_dir: Path,
    data_dir: Path,
    split: str,
    limit: int | None,
    threads: int = 1,
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """Score a saved teacher and the lead baseline on the same examples."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = T5ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    max_source = json.loads((model_dir / "teacher_recipe.json").read_text())["max_source_tokens"]
    rows = load_split(data_dir, split, limit)
    started = time.time()
    predictions = generate(
        model, tokenizer, [source_text(r) for r in rows], max_source, **generate_kwargs
    )
    seconds = time.time() - started
    references = [row["summary"] for row in rows]
    k = lead_k(load_split(data_dir, "train"))
    return {
        "split": split,
        "examples": len(rows),
        "teacher": rouge(predictions, references),
        "lead": rouge(lead_predictions(rows, k), references),
        "lead_k": k,
        "decode_seconds": round(seconds, 1),
        "generation": {**model.generation_config.to_diff_dict(), **generate_kwargs},
        "samples": [
            {"package": r["package"], "reference": r["summary"], "prediction": p}
            for r, p in list(zip(rows, predictions, strict=True))[:8]
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("trainables/demo/teacher"))
    parser.add_argument("--data", type=Path, default=Path("trainables/demo/data"))
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--limit", type=int, default=None, help="first N examples only")
    parser.add_argument("--num-beams", type=int, default=None, help="override generation_config")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    overrides = {} if args.num_beams is None else {"num_beams": args.num_beams}
    result = evaluate_model(
        args.model, args.data, args.split, args.limit, args.threads, **overrides
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
