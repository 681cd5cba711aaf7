"""Train the demo teacher: a small T5 that writes a Debian package's synopsis.

    python -m scripts.train_teacher                  # train (resumes from .teacher-work/)
    python -m scripts.train_teacher --export-only    # export the latest checkpoint + card

Input is `"<package>: <document>"` truncated to --max-source-tokens. To teach copying in
few CPU-minutes, training mixes three tasks (per example, by a schedule over steps):
`copy: <source>` -> a word-aligned span of the source, `lead: <source>` -> the document's
first sentence, and the plain source -> the synopsis. Auxiliary tasks dominate early and
fade out; the last quarter is almost only the synopsis task.

Batches depend only on (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen. Data loading, padding, generation and ROUGE are the
trial's own (`trainables/`, through `scripts.eval_teacher`); the model card is rendered from
`scripts/templates/teacher_card.md`.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from scripts import eval_teacher
from scripts.cards import render
from trainables.batches import make_batch
from trainables.config import DataConfig, DecodingConfig
from trainables.data import source_texts
from trainables.train import weight_decay_groups

# Task schedule knots: (fraction of training, p(copy), p(lead)); p(synopsis) is the rest.
TASK_KNOTS = (
    (0.0, 0.8, 0.1),
    (0.1, 0.6, 0.2),
    (0.3, 0.3, 0.3),
    (0.6, 0.1, 0.2),
    (0.75, 0.0, 0.1),
    (1.0, 0.0, 0.05),
)
TASKS = ("copy", "lead", "synopsis")
PAD, EOS = 0, 1  # the tokenizer's ids, asserted when it is trained
NO_REPEAT_NGRAM = 3
# T5's position-bias table is exempt from weight decay too, as in transformers' Trainer.
NO_DECAY = ("relative_attention_bias",)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True)
class TeacherConfig:
    """Everything that determines the trained teacher."""

    data: str = "trainables/demo/data"
    work: str = ".teacher-work"
    out: str = "trainables/demo/teacher"
    seed: int = 0
    vocab_size: int = 8000
    d_model: int = 128
    d_ff: int = 512
    num_heads: int = 4
    num_layers: int = 6
    num_decoder_layers: int = 6
    dropout: float = 0.0
    max_source_tokens: int = 48
    max_target_tokens: int = 24
    batch_size: int = 32
    steps: int = 14000
    lr: float = 2e-3
    warmup_steps: int = 500
    weight_decay: float = 0.01
    eval_every: int = 1500
    eval_examples: int = 300
    checkpoint_minutes: float = 4.0
    max_minutes: float = 0.0
    # One thread: on the shared 2-core machine, 2 threads ran at 1.49 it/s beside other jobs,
    # 1 thread at 2.56 it/s (OpenMP threads spin against the other processes).
    threads: int = 1


# ---------------------------------------------------------------- tokenizer and data


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> Any:
    """Train a Unigram tokenizer on the training split's texts; saved as a T5Tokenizer."""
    from tokenizers.trainers import UnigramTrainer
    from transformers import AutoTokenizer, T5Tokenizer

    base = T5Tokenizer(extra_ids=0)
    trainer = UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        max_piece_length=16,
    )
    base._tokenizer.train_from_iterator(texts, trainer)
    vocab = json.loads(base._tokenizer.to_str())["model"]["vocab"]
    tokenizer = T5Tokenizer(vocab=[(piece, score) for piece, score in vocab], extra_ids=0)
    tokenizer.save_pretrained(out_dir)
    loaded = AutoTokenizer.from_pretrained(out_dir)
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id) == (PAD, EOS, 2)
    sample = "libfoo-utils: Tools for the Foo 2.0 format (FOO)."
    assert loaded.decode(loaded(sample)["input_ids"], skip_special_tokens=True) == sample
    return loaded


def first_sentence(document: str) -> str:
    return SENTENCE_END.split(document, maxsplit=1)[0]


@dataclass
class Encoded:
    """Token ids of the training set, without special tokens."""

    sources: list[list[int]]
    word_starts: list[list[int]]
    leads: list[list[int]]
    summaries: list[list[int]]
    prefixes: dict[str, list[int]]


def encode(
    tokenizer: Any,
    sources: list[str],
    documents: list[str],
    summaries: list[str],
    config: TeacherConfig,
) -> Encoded:
    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    source_ids = [s[: config.max_source_tokens - 1] for s in ids(sources)]
    starts = [
        [i for i, t in enumerate(tokenizer.convert_ids_to_tokens(s)) if t.startswith("▁")]
        for s in source_ids
    ]
    limit = config.max_target_tokens - 1
    return Encoded(
        sources=source_ids,
        word_starts=starts,
        leads=[s[:limit] for s in ids([first_sentence(d) for d in documents])],
        summaries=[s[:limit] for s in ids(summaries)],
        prefixes={task: ids([f"{task}:"])[0] for task in ("copy", "lead")},
    )


def task_probabilities(fraction: float) -> list[float]:
    """Interpolate the task schedule at this fraction of training."""
    for (f0, c0, l0), (f1, c1, l1) in itertools.pairwise(TASK_KNOTS):
        if fraction <= f1:
            t = (fraction - f0) / (f1 - f0)
            copy, lead = c0 + t * (c1 - c0), l0 + t * (l1 - l0)
            return [copy, lead, 1.0 - copy - lead]
    return [TASK_KNOTS[-1][1], TASK_KNOTS[-1][2], 1.0 - TASK_KNOTS[-1][1] - TASK_KNOTS[-1][2]]


def copy_source_tokens(fraction: float, config: TeacherConfig) -> int:
    """Length curriculum for the copy task: 16 source tokens at first, the full source by 30%.

    Measured: with 48-token sources and spans from the start, the decoder ignored the encoder
    for 2,400 steps (loss stuck at 5.8, outputs "s and s to the s"); copying whole 16-token
    sources alone dropped the loss from 8.1 to 3.2 in 500 steps.
    """
    ramp = min(fraction / 0.3, 1.0)
    return int(16 + ramp * (config.max_source_tokens - 16))


def make_example(
    data: Encoded,
    i: int,
    task: str,
    fraction: float,
    rng: np.random.Generator,
    config: TeacherConfig,
) -> tuple[list[int], list[int]]:
    """Return (source ids, target ids) for one example and task, both ending with </s>."""
    eos = EOS
    source = data.sources[i]
    if task == "synopsis":
        return [*source, eos], [*data.summaries[i], eos]
    if task == "lead":
        prefixed = [*(data.prefixes[task] + source)[: config.max_source_tokens - 1], eos]
        return prefixed, [*data.leads[i], eos]
    source = source[: copy_source_tokens(fraction, config) - len(data.prefixes[task]) - 1]
    prefixed = [*data.prefixes[task], *source, eos]
    if len(source) < config.max_target_tokens:
        return prefixed, [*source, eos]
    starts = [s for s in data.word_starts[i] if s < len(source) - 6] or [0]
    start = starts[rng.integers(len(starts))] if rng.random() < 0.7 else 0
    length = int(rng.integers(6, config.max_target_tokens))
    return prefixed, [*source[start : start + length], eos]


def curriculum_batch(
    data: Encoded, step: int, fraction: float, config: TeacherConfig
) -> dict[str, torch.Tensor]:
    """The batch for `step`: examples depend on (seed, step) only, tasks also on `fraction`."""
    n = len(data.sources)
    per_epoch = n // config.batch_size
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(n)
    indices = order[offset * config.batch_size : (offset + 1) * config.batch_size]
    rng = np.random.default_rng([config.seed, 1_000_003, step])
    probabilities = task_probabilities(fraction)
    pairs = [
        make_example(data, int(i), TASKS[rng.choice(3, p=probabilities)], fraction, rng, config)
        for i in indices
    ]
    sources = [np.array(source) for source, _ in pairs]
    targets = [np.array(target) for _, target in pairs]
    return make_batch(sources, targets, PAD, torch.device("cpu"))


# ---------------------------------------------------------------- model and training


def build_model(config: TeacherConfig, vocab_size: int) -> Any:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(config.seed)
    model_config = T5Config(
        vocab_size=vocab_size,
        d_model=config.d_model,
        d_kv=config.d_model // config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads,
        dropout_rate=config.dropout,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
    )
    return T5ForConditionalGeneration(model_config)


def progress(step: int, seconds: float, config: TeacherConfig) -> float:
    """Fraction of training done: by steps, or by wall time if --max-minutes binds first.

    The CPU is shared, so a fixed step count can overrun a deadline; with max_minutes set,
    the learning-rate decay and the task curriculum follow whichever budget runs out first.
    """
    fraction = step / config.steps
    if config.max_minutes > 0:
        fraction = max(fraction, seconds / (60 * config.max_minutes))
    return min(fraction, 1.0)


def learning_rate(step: int, fraction: float, config: TeacherConfig) -> float:
    """Linear warmup over steps, then linear decay (in `fraction`) to 5% of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    start = config.warmup_steps / config.steps
    remaining = (1.0 - fraction) / max(1.0 - start, 1e-9)
    return config.lr * (0.05 + 0.95 * min(max(remaining, 0.0), 1.0))


def decoding(config: TeacherConfig, num_beams: int) -> DecodingConfig:
    """How the teacher decodes: n-gram blocking and a length cap, greedy or beam search."""
    return DecodingConfig(
        num_beams=num_beams,
        max_new_tokens=config.max_target_tokens,
        no_repeat_ngram_size=NO_REPEAT_NGRAM,
    )


def validation_rouge(
    model: Any,
    tokenizer: Any,
    rows: Any,
    data: DataConfig,
    config: TeacherConfig,
    num_beams: int = 1,
) -> dict[str, float]:
    """ROUGE-1/2/L of the model on `rows` (a `datasets.Dataset` of validation pairs)."""
    predictions = eval_teacher.generate(model, tokenizer, rows, data, decoding(config, num_beams))
    return eval_teacher.rouge(predictions, rows["summary"][:])


def save_checkpoint(path: Path, model: Any, optimizer: Any, step: int, seconds: float) -> None:
    """Atomic: write a temporary file, then rename over the old checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "seconds": seconds,
        },
        tmp,
    )
    os.replace(tmp, path)


def append_curve(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def truncate_curve(path: Path, step: int) -> None:
    """Drop curve rows logged after the checkpoint we resume from."""
    if not path.exists():
        return
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    path.unlink()
    for row in rows:
        if int(row["step"]) <= step:
            append_curve(path, row)


def validation_data(config: TeacherConfig) -> DataConfig:
    """The demo data with the validation split to score on, sources cut like the teacher's."""
    return eval_teacher.demo_data(Path(config.data), "validation", config.max_source_tokens)


def setup(config: TeacherConfig) -> tuple[Any, Any, Encoded, Any]:
    """Load the data, train (or reload) the tokenizer, encode, build the model.

    Returns:
        The tokenizer, the untrained model, the encoded training split and the first
        `eval_examples` validation pairs (a `datasets.Dataset`).
    """
    work = Path(config.work)
    work.mkdir(parents=True, exist_ok=True)
    data = validation_data(config)
    train, val_rows = eval_teacher.load_demo(data, config.eval_examples)
    sources, summaries = source_texts(train, data, "train"), train["summary"][:]
    tokenizer_dir = work / "tokenizer"
    if (tokenizer_dir / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = train_tokenizer(sources + summaries, config.vocab_size, tokenizer_dir)
    encoded = encode(tokenizer, sources, train["document"][:], summaries, config)
    return tokenizer, build_model(config, len(tokenizer)), encoded, val_rows


def fit(config: TeacherConfig) -> None:
    """Train to config.steps, checkpointing; resumes from the work dir if possible."""
    torch.set_num_threads(config.threads)
    work = Path(config.work)
    tokenizer, model, data, val_rows = setup(config)
    val_data = validation_data(config)
    (work / "config.json").write_text(json.dumps(asdict(config), indent=1))
    optimizer = torch.optim.AdamW(
        weight_decay_groups(model, config.weight_decay, exempt=NO_DECAY),
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    checkpoint = work / "checkpoint.pt"
    curve = work / "curve.csv"
    step, seconds = 0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds = state["step"], state["seconds"]
        truncate_curve(curve, step)
        print(f"resumed from step {step} ({seconds / 60:.1f} min trained)", flush=True)
    model.train()
    last_save = time.time()
    started = time.time() - seconds
    losses: dict[str, list[float]] = {"all": []}
    bar = tqdm(
        total=config.steps, initial=step, mininterval=20, dynamic_ncols=True, file=sys.stderr
    )
    fraction = progress(step, seconds, config)
    while fraction < 1.0:
        lr = learning_rate(step, fraction, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = curriculum_batch(data, step, fraction, config)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses["all"].append(loss.item())
        step += 1
        fraction = progress(step, time.time() - started, config)
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(
                loss=f"{np.mean(losses['all'][-100:]):.3f}", lr=f"{lr:.2e}", done=f"{fraction:.3f}"
            )
        if step % config.eval_every == 0 or fraction >= 1.0:
            scores = validation_rouge(model, tokenizer, val_rows, val_data, config)
            row = {
                "step": step,
                "minutes": round((time.time() - started) / 60, 1),
                "train_loss": round(float(np.mean(losses["all"])), 4),
                "lr": f"{lr:.2e}",
                "p_synopsis": round(task_probabilities(fraction)[2], 2),
                "val_rouge1": round(scores["rouge1"], 2),
                "val_rouge2": round(scores["rouge2"], 2),
                "val_rougeL": round(scores["rougeL"], 2),
            }
            append_curve(curve, row)
            tqdm.write(json.dumps(row), file=sys.stderr)
            losses["all"] = []
        if time.time() - last_save > 60 * config.checkpoint_minutes or fraction >= 1.0:
            save_checkpoint(checkpoint, model, optimizer, step, time.time() - started)
            last_save = time.time()
    bar.close()


# ---------------------------------------------------------------- export and card


def export(config: TeacherConfig, test_examples: int | None, provisional: bool) -> dict[str, Any]:
    """Write the latest checkpoint as a loadable teacher with its card; returns the results."""
    from transformers import AutoTokenizer, GenerationConfig, T5ForConditionalGeneration

    torch.set_num_threads(config.threads)
    work, out = Path(config.work), Path(config.out)
    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    model = build_model(config, len(tokenizer))
    state = torch.load(work / "checkpoint.pt", weights_only=False)
    model.load_state_dict(state["model"])
    val_data = validation_data(config)
    _, val_rows = eval_teacher.load_demo(val_data, config.eval_examples)
    beams = {
        b: validation_rouge(model, tokenizer, val_rows, val_data, config, num_beams=b)
        for b in (1, 4)
    }
    chosen = decoding(config, max(beams, key=lambda b: beams[b]["rougeL"]))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=PAD,
        eos_token_id=EOS,
        pad_token_id=PAD,
        num_beams=chosen.num_beams,
        max_new_tokens=chosen.max_new_tokens,
        no_repeat_ngram_size=chosen.no_repeat_ngram_size,
        do_sample=False,
    )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.half().save_pretrained(out)
    # Weights are stored in fp16 to fit 10 MB; they load as fp32 (CPU fp16 is slow to train).
    model_config = json.loads((out / "config.json").read_text())
    model_config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(model_config, indent=2) + "\n")
    tokenizer.save_pretrained(out)
    recipe = {
        **asdict(config),
        "trained_steps": state["step"],
        "trained_minutes": round(state["seconds"] / 60, 1),
    }
    (out / "teacher_recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    if (work / "curve.csv").exists():
        shutil.copy(work / "curve.csv", out / "learning_curve.csv")
    reloaded = T5ForConditionalGeneration.from_pretrained(out)
    assert reloaded.dtype == torch.float32, reloaded.dtype
    results = eval_teacher.evaluate_model(
        out, Path(config.data), "test", test_examples, threads=config.threads
    )
    results["validation_by_beams"] = beams
    results["parameters"] = sum(p.numel() for p in reloaded.parameters())
    results["megabytes"] = round(sum(f.stat().st_size for f in out.iterdir()) / 1e6, 2)
    (out / "README.md").write_text(model_card(config, recipe, results, provisional))
    (work / f"results-step{state['step']}.json").write_text(json.dumps(results, indent=1))
    return results


def curve_table(path: Path) -> str:
    if not path.exists():
        return "(no curve logged)"
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] if rows else []
    lines += ["| " + " | ".join(row.values()) + " |" for row in rows]
    return "\n".join(lines)


def model_card(
    config: TeacherConfig, recipe: dict[str, Any], results: dict[str, Any], provisional: bool
) -> str:
    """Render `templates/teacher_card.md` (README.md of the exported teacher)."""
    status = (
        f"**PROVISIONAL** export of the checkpoint at step {recipe['trained_steps']} "
        f"(schedule: up to {config.steps} steps); the final teacher overwrites it."
        if provisional
        else f"Final teacher after {recipe['trained_steps']} steps."
    )
    beams = ", ".join(
        f"{b} beam(s): {s['rougeL']:.2f}" for b, s in results["validation_by_beams"].items()
    )
    samples = "\n".join(
        f"| {s['package']} | {s['reference']} | {s['prediction']} |" for s in results["samples"]
    )
    scores = {
        f"{system}_{name}": f"{value:.2f}"
        for system in ("teacher", "lead")
        for name, value in results[system].items()
    }
    card = render(
        "teacher_card.md",
        {
            **asdict(config),
            **scores,
            "status": status,
            "vocab": f"{config.vocab_size:,}",
            "num_beams": results["generation"].get("num_beams"),
            "beams": beams,
            "examples": f"{results['examples']:,}",
            "lead_k": results["lead_k"],
            "samples": samples,
            "parameters": f"{results['parameters']:,}",
            "megabytes": results["megabytes"],
            "decode_seconds": results["decode_seconds"],
            "trained_steps": f"{recipe['trained_steps']:,}",
            "trained_minutes": recipe["trained_minutes"],
            "curve": curve_table(Path(config.work) / "curve.csv"),
            "steps_total": f"{config.steps:,}",
            "longest_span": config.max_target_tokens - 1,
            "knots": TASK_KNOTS,
            "command": command(config),
            "limit_flag": "" if results["examples"] > 2000 else f" --limit {results['examples']}",
        },
    )
    return card + by_steps_note(config, recipe)


def by_steps_note(config: TeacherConfig, recipe: dict[str, Any]) -> str:
    """How to rerun a teacher that stopped on its time limit: by steps, on any machine."""
    if config.max_minutes <= 0 or recipe["trained_steps"] >= config.steps:
        return ""
    by_steps = replace(config, steps=recipe["trained_steps"], max_minutes=0.0)
    note = {"max_minutes": config.max_minutes, "command": command(by_steps)}
    return "\n" + render("by_steps_note.md", note)


def command(config: TeacherConfig) -> str:
    """The train_teacher command line that reproduces `config`."""
    defaults = asdict(TeacherConfig())
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in asdict(config).items() if v != defaults[k]]
    return " ".join(["python -m scripts.train_teacher", *flags])


def parse_args(argv: list[str] | None = None) -> tuple[TeacherConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for field, default in asdict(TeacherConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument(
        "--export-only", action="store_true", help="export the latest checkpoint, no training"
    )
    parser.add_argument(
        "--provisional", action="store_true", help="mark the exported card provisional"
    )
    parser.add_argument(
        "--test-examples", type=int, default=None, help="evaluate on the first N test pairs"
    )
    args = parser.parse_args(argv)
    fields = asdict(TeacherConfig())
    return TeacherConfig(**{k: getattr(args, k) for k in fields}), args


def main(argv: list[str] | None = None) -> None:
    config, args = parse_args(argv)
    if not args.export_only:
        fit(config)
    results = export(config, args.test_examples, args.provisional)
    print(
        json.dumps(
            {k: results[k] for k in ("examples", "teacher", "lead", "generation", "megabytes")},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
