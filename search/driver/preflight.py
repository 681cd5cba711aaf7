"""Checks that need the model or the data, then the once-per-sweep preparation.

Cheap checks come first (the model's config, the data's columns, the layer ranges against the
model), so bad input fails in seconds; then the tokenizer, the weights and the tokenized data,
which every trial receives through Ray's object store.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.console import echo
from search.driver.progress import duration
from search.space.config import AUTO_TARGETS, ConfigError, SweepConfig
from search.space.params import Fixed, param_values
from search.space.suggest import plan, typical_values
from search.strategy.recipe import RecipeChoice, choose_targets, probe_steps
from trainables.data import check_source_length, load_splits
from trainables.shrink import (
    LayerSizes,
    ParamCount,
    UnsupportedModelError,
    count_parameters,
    layer_counts,
    layer_sizes,
)
from trainables.teacher import TeacherScore, teacher_score
from trainables.tokens import TokenizedData, tokenize_splits
from trainables.trial import ModelError, PackedModel, load_model_config, pack_base, resolve_model

if TYPE_CHECKING:
    from search.driver.workers import BaseWorkers
    from trainables.config import TrialConfig
    from trainables.pseudo import ShardProgress

# Besides config.json, a saved model directory needs weights in safetensors (a pickled .bin can
# run code when loaded, so it is never read) and a tokenizer: without one, transformers builds
# an empty tokenizer that turns every text into <unk> and the sweep trains on nothing.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "source.spm",
    "vocab.json",
    "vocab.txt",
)
logger = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0  # between progress lines of pseudo-labeling


@dataclass(frozen=True)
class Prepared:
    """What every trial of a sweep shares."""

    base: PackedModel
    data: TokenizedData
    parent_layers: tuple[int, int]
    parent_params: int
    parent_size: ParamCount | None = None  # with parent_params' non-embedding part
    layer_sizes: LayerSizes | None = None  # what each layer takes with it: student sizes
    seconds: float = 0.0  # what `prepare` took: model load, tokenizing (and checks it ran)
    screen: tuple = ()  # every student scored untrained, for a new sweep (`search.strategy.screen`)
    screen_seconds: float = 0.0
    screen_where: str = ""  # where the screen ran, e.g. "on 2 workers (cpu)"
    plan: Any = None  # what the rest of a new sweep will cost (`search.driver.plan.SweepPlan`)
    pseudo_labels: str = ""  # where they came from: "read from <file>" or "generated on ..."
    teacher: TeacherScore | None = None  # the base model's own summaries, for a new sweep
    recipe: RecipeChoice | None = None  # what `train.targets: auto` chose


def needs_pseudo_labels(config: SweepConfig) -> bool:
    """Whether any trial of the sweep may train on the base model's pseudo-labels (with
    `targets: auto`, when it picks them)."""
    return bool({"pseudo", "both", AUTO_TARGETS} & set(param_values(config.train.targets) or []))


def chooses_targets(config: SweepConfig) -> bool:
    """Whether the sweep chooses its targets itself (`train.targets: auto`)."""
    return param_values(config.train.targets) == [AUTO_TARGETS]


def with_targets(config: SweepConfig, targets: str) -> SweepConfig:
    """`config` with every trial training on `targets`."""
    return dataclasses.replace(
        config, train=dataclasses.replace(config.train, targets=Fixed(targets))
    )


def _pseudo_labeled(
    data: TokenizedData,
    config: SweepConfig,
    model: Any,
    tokenizer: Any,
    base: PackedModel,
    cache: Path | None,
    progress: bool,
    workers: BaseWorkers | None,
    key: dict[str, str],
    generate: bool = True,
) -> tuple[TokenizedData, str]:
    """The data with pseudo-labels, and where they came from (read from a file, or generated
    on workers); without `generate`, the data as it is when they were not made before.
    `key` is the base model's content key (`trainables.fingerprint.model_key`)."""
    from trainables.pseudo import add_pseudo_labels, in_process

    if not generate:
        make = None
    elif workers is not None:
        make = workers.make_shards(base, config.decoding)
    else:
        make = in_process(model, tokenizer, config.decoding)
    last_report = [0.0]

    def report(at: ShardProgress) -> None:
        if at.sources_left and at.seconds - last_report[0] < PROGRESS_SECONDS:
            return
        last_report[0] = at.seconds
        rate = at.sources_made / max(at.seconds, 1e-9)
        echo(
            progress,
            f"pseudo-labels: {at.shards_done}/{at.shards} shards, {rate:,.0f} sources/s, "
            f"{duration(at.sources_left / max(rate, 1e-9))} to go",
        )

    def warn(message: str) -> None:
        logger.warning(message)
        echo(progress, f"warning: {message}")

    labeled, source = add_pseudo_labels(
        data, tokenizer, key, config.data, config.decoding, cache, make, warn, report
    )
    if labeled.pseudo_sources is None:
        return labeled, ""  # not made before, and not to be made now
    count = f"pseudo-labels: {len(labeled.pseudo_sources):,} sources"
    if source.path is not None:
        origin = f"read from {source.path}"
        echo(progress, f"{count}, {origin}")
        return labeled, origin
    shards = source.shards_kept + source.shards_made
    if not source.shards_made:
        origin = f"assembled from the {shards} shards an earlier run made"
    else:
        where = workers.describe() if workers is not None else "in this process"
        origin = f"generated {where}"
    if source.shards_kept and source.shards_made:
        origin += f", {source.shards_kept} of {shards} shards kept"
    echo(progress, f"{count} {origin}, kept in {cache}")
    return labeled, origin


def check_inputs(config: SweepConfig) -> tuple[Any, Any]:
    """Check the model and the data against the configuration, without loading weights.

    Returns:
        The model's config and the raw data splits.

    Raises:
        ModelError: the model does not exist, is not a supported encoder-decoder, or a local
            model directory lacks safetensors weights or a tokenizer.
        ConfigError: the layer ranges ask for more layers than the model has, or the target
            lengths exceed the decoder's positions.
        DataError: the dataset, a split or a column is missing, or a split is empty.
    """
    model_config = load_model_config(config.model, config.trust_remote_code)
    try:
        parent_layers = layer_counts(model_config)
    except UnsupportedModelError as err:
        raise ModelError(f"model {config.model!r}: {err}") from None
    check_model_files(config.model)
    check_layer_ranges(config, parent_layers)
    check_target_lengths(config, model_config)
    splits = load_splits(config.data)
    check_source_length(config.data, model_config)
    return model_config, splits


def check_model_files(name: str) -> None:
    """Raises ModelError if a local model directory lacks safetensors weights or a tokenizer.

    A Hub model's files are only known once it loads; `prepare` reports those failures.
    """
    directory = Path(resolve_model(name))
    if not directory.is_dir():
        return
    present = {p.name for p in directory.iterdir()}
    if not present & set(WEIGHT_FILES):
        pickled = sorted(p for p in present if p.endswith((".bin", ".pt", ".pth", ".ckpt")))
        found = f" (found {', '.join(pickled)}: convert it to safetensors)" if pickled else ""
        raise ModelError(
            f"model {name!r}: no model.safetensors in {directory}{found}; "
            "weights load from safetensors only"
        )
    if not present & set(TOKENIZER_FILES):
        raise ModelError(
            f"model {name!r}: no tokenizer in {directory} (none of {', '.join(TOKENIZER_FILES)})"
        )


def check_layer_ranges(config: SweepConfig, parent_layers: tuple[int, int]) -> None:
    """Raises ConfigError if the space asks for more layers than the model has."""
    problems = []
    for side, n_parent in zip(("encoder", "decoder"), parent_layers, strict=True):
        values = param_values(getattr(config.layers, side)) or []
        if values and max(values) > n_parent:
            problems.append(
                f"layers.{side}: asks for up to {max(values)} layers; {config.model} has {n_parent}"
            )
        for i, point in enumerate(config.first):
            if isinstance(point.get(side), int) and point[side] > n_parent:
                problems.append(
                    f"first[{i}].{side}: {point[side]} layers; the model has {n_parent}"
                )
    if problems:
        raise ConfigError(problems)


def check_target_lengths(config: SweepConfig, model_config: Any) -> None:
    """Raises ConfigError if the decoder cannot hold the labels or the generated summaries.

    Like sources (`check_source_length`), targets are bounded by the position table of BART-
    like models, and a longer one fails mid-trial; T5's relative positions have no bound.
    """
    limit = getattr(model_config, "max_decoder_position_embeddings", None) or getattr(
        model_config, "max_position_embeddings", None
    )
    lengths = {
        "data.max_target_length": config.data.max_target_length,
        "decoding.max_new_tokens": config.decoding.max_new_tokens,
    }
    problems = [
        f"{where}: {value} exceeds the {limit} positions the decoder of {config.model} has; "
        f"set it <= {limit}"
        for where, value in lengths.items()
        if limit is not None and value > limit
    ]
    if problems:
        raise ConfigError(problems)


def check_token_ids(name: str, data: TokenizedData, model_config: Any) -> None:
    """Raises ModelError if the tokenizer makes ids the model has no embedding for."""
    rows = getattr(model_config, "vocab_size", None)
    arrays = (data.train_input_ids, data.train_labels, data.eval_input_ids, data.eval_labels)
    largest = max((int(a.values.max()) for a in arrays if a.values.size), default=-1)
    if rows is not None and largest >= rows:
        raise ModelError(
            f"model {name!r}: its tokenizer makes token id {largest}, but the model embeds "
            f"only {rows} tokens; is the tokenizer the model's own?"
        )


def check_resources(config: SweepConfig) -> None:
    """Raises ConfigError if one trial asks for more CPUs or GPUs than this machine has.

    For a local Ray only: a cluster may grow, but a local Ray waits forever for a trial it
    can never place (Tune only warns).
    """
    import torch

    have = {"cpus": len(os.sched_getaffinity(0)), "gpus": torch.cuda.device_count()}
    problems = [
        f"resources.{kind}: each trial asks for {getattr(config.resources, kind):g} "
        f"{kind[:-1].upper()}s; this machine has {n}"
        for kind, n in have.items()
        if getattr(config.resources, kind) > n
    ]
    if problems:
        raise ConfigError(problems)


def prepare(
    config: SweepConfig,
    inputs: tuple[Any, Any] | None = None,
    pseudo_label_cache: Path | None = None,
    progress: bool = False,
    workers: BaseWorkers | None = None,
    read_only: bool = False,
    before_work: Callable[[Prepared], None] | None = None,
    score_teacher: bool = False,
) -> Prepared:
    """Check inputs (unless `inputs` is what `check_inputs` returned), then load the base
    model once and tokenize the data once, with the base model's pseudo-labels when a trial
    may train on them (`train.targets`), read from `pseudo_label_cache` if made before, else
    made by `workers` (in this process without them).

    With `score_teacher` (a new sweep), or `train.targets: auto`, the base model's own
    summaries of the evaluation split are scored first (`Prepared.teacher`); for `auto`, the
    full model is then fine-tuned briefly on the gold summaries and the targets chosen
    (`search.strategy.recipe`, `Prepared.recipe`): pseudo-labels are made only if it picks them.
    `read_only` (`plan`) does none of this work: labels made before are read, nothing else.

    `before_work`, if given, is called once with the model and data as loaded (with the
    pseudo-labels made before, if any), before any other work: what it raises stops the
    preparation before it writes anything.

    Raises:
        ConfigError, DataError, ModelError: bad input (see `check_inputs`), or a model that
            does not load, or data its tokenizer does not fit.
    """
    start = time.perf_counter()
    model_config, splits = inputs or check_inputs(config)
    try:
        base, model, tokenizer = pack_base(config.model, config.trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelError(f"model {config.model!r} cannot be loaded: {first_line}") from None
    data = tokenize_splits(splits, tokenizer, config.data)
    check_token_ids(config.model, data, model_config)
    size = count_parameters(model)
    prepared = Prepared(
        base=base,
        data=data,
        parent_layers=layer_counts(model_config),
        parent_params=size.total,
        parent_size=size,
        layer_sizes=layer_sizes(model),
    )
    if needs_pseudo_labels(config):  # those made before, read (a file, or every shard)
        from trainables.fingerprint import model_key

        labels = functools.partial(
            _pseudo_labeled, config=config, model=model, tokenizer=tokenizer, base=base,
            cache=pseudo_label_cache, progress=progress, workers=workers,
            key=model_key(model, tokenizer),
        )  # fmt: skip
        data, origin = labels(data, generate=False)
        prepared = dataclasses.replace(prepared, data=data, pseudo_labels=origin)
    if before_work is not None:
        before_work(dataclasses.replace(prepared, seconds=time.perf_counter() - start))
    if read_only:
        return dataclasses.replace(prepared, seconds=time.perf_counter() - start)
    if score_teacher or chooses_targets(config):
        teacher = _score_teacher(data, config, model, tokenizer, base, workers, progress)
        prepared = dataclasses.replace(prepared, teacher=teacher)
    if chooses_targets(config):
        recipe = _choose_targets(prepared, teacher, config, workers, progress)
        prepared = dataclasses.replace(prepared, recipe=recipe)
        config = with_targets(config, recipe.targets)
        if not needs_pseudo_labels(config):  # read before the choice; not trained on
            data = dataclasses.replace(data, pseudo_sources=None, pseudo_labels=None)
            prepared = dataclasses.replace(prepared, data=data, pseudo_labels="")
    if needs_pseudo_labels(config) and data.pseudo_labels is None:
        data, origin = labels(data)
        prepared = dataclasses.replace(prepared, data=data, pseudo_labels=origin)
    return dataclasses.replace(prepared, seconds=time.perf_counter() - start)


def _score_teacher(
    data: TokenizedData,
    config: SweepConfig,
    model: Any,
    tokenizer: Any,
    base: PackedModel,
    workers: BaseWorkers | None,
    progress: bool,
) -> TeacherScore:
    """The base model's own summaries of the evaluation split (its shards on `workers`, else
    in this process), scored as every trial is."""
    from trainables.pseudo import in_process, shard_plan

    began = time.perf_counter()
    sources = data.eval_input_ids
    if workers is not None:
        make = workers.make_shards(base, config.decoding)
    else:
        make = in_process(model, tokenizer, config.decoding)
    positions = shard_plan(sources.lengths)
    shards = {i: [sources[j] for j in rows] for i, rows in enumerate(positions)}
    summaries = [""] * len(sources)

    def keep(index: int, texts: list[str]) -> None:
        for position, text in zip(positions[index], texts, strict=True):
            summaries[position] = text

    make(shards, keep)
    score = teacher_score(summaries, data.eval_references)
    echo(
        progress,
        f"teacher (the base model, untrained): ROUGE-L {score.rouge['rougeL']:.2f} on "
        f"{score.pairs:,} evaluation pairs in the sweep's decoding, its summaries "
        f"{score.words:.1f} words long, the gold ones {score.reference_words:.1f} "
        f"({time.perf_counter() - began:.0f}s)",
    )
    return score


def gold_probe_trial(config: SweepConfig, prepared: Prepared) -> tuple[TrialConfig, int]:
    """The full model as `train.targets: auto` fine-tunes it on the gold summaries (the
    sweep's typical training values), and for how many steps (`search.strategy.recipe`)."""
    from trainables.train import total_steps

    values = {**typical_values(config), "strategy": "sft", "targets": "gold"}
    encoder, decoder = prepared.parent_layers
    full = plan({**values, "encoder": encoder, "decoder": decoder}, prepared.parent_layers)
    return full, probe_steps(total_steps(full.train, len(prepared.data.train_input_ids)))


def _choose_targets(
    prepared: Prepared,
    teacher: TeacherScore,
    config: SweepConfig,
    workers: BaseWorkers | None,
    progress: bool,
) -> RecipeChoice:
    """`train.targets: auto`: the full model fine-tuned briefly on the gold summaries (on one
    of `workers`, else here) against the `teacher`'s own summaries (`search.strategy.recipe`)."""
    from trainables.teacher import gold_probe

    full, steps = gold_probe_trial(config, prepared)
    echo(progress, f"targets: auto; fine-tuning the full model {steps} steps on the gold summaries")
    if workers is not None:
        probed = workers.gold_probe(full, prepared.base, prepared.data, steps)
    else:
        threads = max(1, int(config.resources.cpus))
        probed = gold_probe(full, prepared.base, prepared.data, config.decoding, steps, threads)
    choice = choose_targets(teacher.rouge["rougeL"], probed["rougeL"], steps)
    echo(progress, f"targets: {choice.reason()} ({probed['seconds']:.0f}s)")
    return choice
