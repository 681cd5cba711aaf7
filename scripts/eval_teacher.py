"""Evaluate a saved teacher (or the lead baseline) on a split of the demo dataset.

    python -m scripts.eval_teacher --model trainables/demo/teacher --split test

Decoding uses the model's generation_config.json unless overridden. ROUGE is the
`rouge_score` F1 with stemming, x100, one synopsis per example. Loading, generation and
ROUGE are the trial's own (`trainables.data`, `trainables.scoring`, `trainables.rouge`), so the
teacher is scored exactly as the sweep scores its students.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from trainables.config import DataConfig, DecodingConfig
from trainables.rouge import rouge_scores

SOURCE_TEMPLATE = "{package}: {document}"
SPLITS = ("train", "validation", "test")
CARD_ROUGE = ("rouge1", "rouge2", "rougeL")  # what the cards report; no rougeLsum
GENERATE_BATCH = 64
SAMPLES = 8


def demo_data(data_dir: Path, split: str, max_source_tokens: int) -> DataConfig:
    """The demo dataset as `trainables.data` reads it.

    Args:
        data_dir: A directory of `{train,validation,test}.jsonl.gz`.
        split: The split to evaluate on (`load_splits` calls it "eval").
        max_source_tokens: Where sources are cut, `</s>` included.

    Returns:
        Sources `"<package>: <document>"`, the synopsis as summary.
    """
    files = {name: str(data_dir / f"{name}.jsonl.gz") for name in SPLITS}
    return DataConfig(
        files=files,
        eval_split=split,
        source_template=SOURCE_TEMPLATE,
        max_source_length=max_source_tokens,
    )


def load_demo(data: DataConfig, limit: int | None = None) -> tuple[Any, Any]:
    """The training split, and the first `limit` rows of the evaluation split in file order.

    Args:
        data: From `demo_data`.
        limit: How many evaluation rows; None or 0 for all.

    Returns:
        Two `datasets.Dataset`s: train, and the evaluation rows.
    """
    from trainables.data import load_splits

    # The cards say "the first N pairs in file order": not `max_eval_examples`, which samples.
    splits = load_splits(data)
    rows = splits["eval"]
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    return splits["train"], rows


def generate(
    model: Any, tokenizer: Any, rows: Any, data: DataConfig, decoding: DecodingConfig
) -> list[str]:
    """Summaries of `rows`, decoded as `decoding` says, by the trial's own generation.

    Args:
        model: A seq2seq LM; its train/eval mode is kept.
        tokenizer: Its tokenizer.
        rows: A `datasets.Dataset` of the demo data.
        data: From `demo_data`: how sources are built and cut.
        decoding: The generation settings.

    Returns:
        One summary per row.
    """
    from trainables.scoring import generate_summaries
    from trainables.tokens import tokenize_sources

    input_ids, _ = tokenize_sources(rows, tokenizer, data)
    predictions, _ = generate_summaries(
        model, tokenizer, input_ids, decoding, batch_size=GENERATE_BATCH
    )
    return predictions


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 x100 with stemming: `trainables.rouge.rouge_scores` without rougeLsum."""
    scores = rouge_scores(predictions, references)
    return {name: scores[name] for name in CARD_ROUGE}


def lead_k(summaries: Sequence[str]) -> int:
    """k for the lead baseline: the median training-summary length in words."""
    return round(statistics.median(len(summary.split()) for summary in summaries))


def lead_predictions(documents: Sequence[str], k: int) -> list[str]:
    """The lead baseline: the first `k` words of each document."""
    return [" ".join(document.split()[:k]) for document in documents]


def saved_decoding(generation: Any, num_beams: int | None = None) -> DecodingConfig:
    """A saved `GenerationConfig` as decoding settings, the beam count optionally overridden."""
    decoding = DecodingConfig(
        num_beams=generation.num_beams,
        max_new_tokens=generation.max_new_tokens,
        no_repeat_ngram_size=generation.no_repeat_ngram_size,
        length_penalty=generation.length_penalty,
    )
    return decoding if num_beams is None else replace(decoding, num_beams=num_beams)


def evaluate_model(
    model_dir: Path,
    data_dir: Path,
    split: str,
    limit: int | None,
    threads: int = 1,
    num_beams: int | None = None,
) -> dict[str, Any]:
    """Score a saved teacher and the lead baseline on the same examples.

    Args:
        model_dir: A teacher written by `scripts.train_teacher` (with `teacher_recipe.json`).
        data_dir: The demo dataset's directory.
        split: Which split to score.
        limit: The first `limit` pairs only; None for all.
        threads: torch threads.
        num_beams: Overrides the saved generation config's beam count.

    Returns:
        Scores of the teacher and of the lead baseline, the decoding used, timing and samples.
    """
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = T5ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    max_source = json.loads((model_dir / "teacher_recipe.json").read_text())["max_source_tokens"]
    data = demo_data(data_dir, split, max_source)
    train, rows = load_demo(data, limit)
    decoding = saved_decoding(model.generation_config, num_beams)
    started = time.time()
    predictions = generate(model, tokenizer, rows, data, decoding)
    seconds = time.time() - started
    references = rows["summary"][:]
    k = lead_k(train["summary"][:])
    overrides = {} if num_beams is None else {"num_beams": num_beams}
    samples = zip(rows["package"][:SAMPLES], references, predictions, strict=False)
    return {
        "split": split,
        "examples": len(rows),
        "teacher": rouge(predictions, references),
        "lead": rouge(lead_predictions(rows["document"][:], k), references),
        "lead_k": k,
        "decode_seconds": round(seconds, 1),
        "generation": {**model.generation_config.to_diff_dict(), **overrides},
        "samples": [
            {"package": package, "reference": reference, "prediction": prediction}
            for package, reference, prediction in samples
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("trainables/demo/teacher"))
    parser.add_argument("--data", type=Path, default=Path("trainables/demo/data"))
    parser.add_argument("--split", default="test", choices=list(SPLITS))
    parser.add_argument("--limit", type=int, default=None, help="first N examples only")
    parser.add_argument("--num-beams", type=int, default=None, help="override generation_config")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    result = evaluate_model(
        args.model, args.data, args.split, args.limit, args.threads, args.num_beams
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
