"""Trial throughput: our training loop against a plain `Seq2SeqTrainer`, side by side.

One student of the default sweep (3+3 layers of the demo teacher, SFT strategy) is trained on
fresh copies of the same weights, with the same data, seed, learning rate, warmup, batch size,
step count and CPU threads, (a) by `trainables.train.fine_tune`, what a trial runs, and (b) by
`transformers.Seq2SeqTrainer` as a user would set it up (`DataCollatorForSeq2Seq`, no
evaluation, checkpoints, logging integrations or progress bars). Both fine-tune on the labels
alone: the default sweep also distills from the teacher, which a plain Trainer cannot.

The two run in two threads that take turns, one optimizer step each, so the load of other
processes on the machine falls on both alike; each side's clock runs only during its own turns.
Examples per second = training examples / those seconds, for the whole training call
(`fine_tune(...)`, `trainer.train()`: optimizer and data loader set-up included); loading and
shrinking the model and building the `Trainer` are excluded. A round trains both once, the
next round starts with the other side. Target: ours / Trainer >= 1.0, the rounds' median.

    python -m bench.throughput                       # 5 rounds of 100 steps (4-6 min here)
    python -m bench.throughput --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from bench.common import DEFAULT_SPACE, prepare_default, trial_config
from search.driver.preflight import Prepared
from trainables.config import TrialConfig
from trainables.tokens import TokenizedData

TARGET = 1.0  # ours / Trainer, examples per second
OURS, TRAINER = "ours", "Trainer"


@dataclass(frozen=True)
class Speed:
    """One training call: examples, seconds of its own turns, and the mean training loss."""

    examples: int
    seconds: float
    mean_loss: float

    @property
    def per_second(self) -> float:
        return self.examples / self.seconds


class Turns:
    """Lets two training loops in two threads take turns, one optimizer step at a time.

    A side calls `take` before it starts, `step` after each optimizer step (its turn ends and
    it waits for the next one) and `finish` when done; `seconds` sums each side's turns. Once
    one side has finished, the other goes on alone.
    """

    def __init__(self, first: str, second: str) -> None:
        self.go = {first: threading.Event(), second: threading.Event()}
        self.other = {first: second, second: first}
        self.seconds = {first: 0.0, second: 0.0}
        self.done: set[str] = set()
        self.began = 0.0
        self.go[first].set()

    def take(self, side: str) -> None:
        self.go[side].wait()
        self.go[side].clear()
        self.began = time.perf_counter()

    def give(self, side: str) -> None:
        self.seconds[side] += time.perf_counter() - self.began
        other = self.other[side]
        self.go[side if other in self.done else other].set()

    def step(self, side: str) -> None:
        self.give(side)
        self.take(side)

    def finish(self, side: str) -> None:
        self.done.add(side)
        self.give(side)


class _TakeTurns(TrainerCallback):
    """Ends the Trainer's turn after each optimizer step."""

    def __init__(self, turns: Turns) -> None:
        self.turns = turns

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.turns.step(TRAINER)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = [f"train.max_steps={args.steps}", "train.eval_every=0", "train.distill=0"]
    config, prepared, seconds = prepare_default(args.space, overrides)
    trial = trial_config(config, prepared, args.encoder, args.decoder, args.strategy)
    student, tokenizer = build_student(prepared, trial)
    dataset = train_dataset(prepared.data)
    print(
        f"prepared in {seconds:.0f}s; student {args.encoder}+{args.decoder} ({args.strategy}), "
        f"{args.steps} steps x batch {trial.train.batch_size}, {args.threads} thread(s)"
    )

    def sides(turns: Turns, output_dir: Path) -> dict[str, Callable[[], Speed]]:
        return {
            OURS: ours(copy.deepcopy(student), prepared.data, trial, tokenizer, turns),
            TRAINER: trainer(copy.deepcopy(student), dataset, trial, tokenizer, turns, output_dir),
        }

    ratios = [_round(i, sides, args.threads) for i in range(args.repeats)]
    ratio = statistics.median(ratios)
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"median ours/Trainer: {ratio:.2f}x (target >= {TARGET:.1f}: {verdict})")
    return 0


def build_student(prepared: Prepared, trial: TrialConfig) -> tuple[Any, Any]:
    """The shrunk student and its tokenizer, built as `run_trial` builds them."""
    from trainables.shrink import shrink
    from trainables.trial import load_packed

    parent, tokenizer = load_packed(prepared.base)
    return shrink(parent, trial.encoder_layers, trial.decoder_layers), tokenizer


def train_dataset(data: TokenizedData) -> Any:
    """The same tokenized training rows as a `datasets.Dataset`, the Trainer's input."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "input_ids": [row.tolist() for row in data.train_input_ids],
            "labels": [row.tolist() for row in data.train_labels],
        }
    )


def ours(
    model: Any, data: TokenizedData, trial: TrialConfig, tokenizer: Any, turns: Turns
) -> Callable[[], Speed]:
    """Training with `fine_tune`, the trial's loop, ready to run in a thread."""
    from trainables.train import fine_tune

    def train() -> Speed:
        turns.take(OURS)
        try:
            stats = fine_tune(
                model,
                data,
                trial.train,
                pad_token_id=tokenizer.pad_token_id,
                on_step=lambda step, loss: turns.step(OURS),
                threads=torch.get_num_threads(),
            )
        finally:
            turns.finish(OURS)
        return Speed(stats.examples, turns.seconds[OURS], statistics.fmean(stats.losses))

    return train


def trainer(
    model: Any, dataset: Any, trial: TrialConfig, tokenizer: Any, turns: Turns, output_dir: Path
) -> Callable[[], Speed]:
    """Training with a plain `Seq2SeqTrainer` on the same settings, ready to run in a thread
    (the `Trainer` is built here, outside the timed turns)."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer

    built = Seq2SeqTrainer(
        model=model,
        args=trainer_arguments(trial, output_dir),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[_TakeTurns(turns)],
    )

    def train() -> Speed:
        turns.take(TRAINER)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its closing metrics dict
                output = built.train()
        finally:
            turns.finish(TRAINER)
        args = built.args
        examples = output.global_step * args.per_device_train_batch_size
        examples *= args.gradient_accumulation_steps
        return Speed(examples, turns.seconds[TRAINER], output.training_loss)

    return train


def trainer_arguments(trial: TrialConfig, output_dir: Path) -> Any:
    """`Seq2SeqTrainingArguments` matching `trial.train`: AdamW (fused, the default), linear
    warmup and decay, gradient norm clipped to 1, on the CPU; nothing saved or reported."""
    from transformers import Seq2SeqTrainingArguments

    train = trial.train
    return Seq2SeqTrainingArguments(
        output_dir=str(output_dir),
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a ratio of the steps
        weight_decay=train.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=train.seed,
        use_cpu=True,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def _round(
    index: int,
    sides: Callable[[Turns, Path], dict[str, Callable[[], Speed]]],
    threads: int,
) -> float:
    """Train both sides once, taking turns (the first turn alternates between rounds); print
    them and return ours / Trainer."""
    first, second = (OURS, TRAINER) if index % 2 == 0 else (TRAINER, OURS)
    turns = Turns(first, second)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        train = sides(turns, Path(tmp))
        futures = {name: pool.submit(train[name]) for name in (first, second)}
        speeds = {name: future.result() for name, future in futures.items()}
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"a side changed torch's threads to {torch.get_num_threads()}")
    ratio = speeds[OURS].per_second / speeds[TRAINER].per_second
    sides = " | ".join(
        f"{n} {s.per_second:5.1f} ex/s ({s.examples} in {s.seconds:.1f}s, loss {s.mean_loss:.3f})"
        for n, s in speeds.items()
    )
    print(f"round {index + 1}: {sides} -> {ratio:.2f}x", flush=True)
    return ratio


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of both sides")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a trial: 1)")
    parser.add_argument("--encoder", type=int, default=3)
    parser.add_argument("--decoder", type=int, default=3)
    parser.add_argument("--strategy", default="sft")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
