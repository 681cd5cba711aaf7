"""Pseudo-labels: the base model's own summaries of the training sources, for students to learn
from (the PL variant of Shleifer & Rush 2020).

They are generated once per sweep with the sweep's decoding and kept in a cache directory keyed
by what they depend on, part by part (`label_key`): the base model's content (weights,
configuration, generation settings, tokenizer; `trainables.fingerprint`), the sources' token
ids, the decoding and the target length. Not the library versions: the shipped demo labels
stay valid across upgrades. Each file records its key's parts, so when the labels shipped for
a sweep's model or data no longer match, the miss names the part that differs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import DataConfig, DecodingConfig
from trainables.fingerprint import combined_key, differing_parts, digest_json, rows_digest
from trainables.tokens import TokenizedData, TokenRows, tokenize_targets

# Made by the demo teacher for the default sweep (`data.pseudo_examples: 8000`, its decoding),
# shipped so that the README's first command does not spend minutes making them again; any
# other model, data or decoding has another key and is generated as usual.
SHIPPED = Path(__file__).parent / "demo" / "pseudo-labels"
# A shard is the unit a worker generates and an interrupted sweep keeps: at most SHARD_SIZE
# sources, and at least MIN_SHARDS shards when there are sources enough, so that a small set
# still keeps several workers busy. Its size depends on the number of sources only, so a
# sweep resumed on another cluster finds the shards it kept.
SHARD_SIZE = 512
MIN_SHARDS = 16
BATCH_SIZE = 64  # sources per `generate` call
SAMPLE_SEED = 0


@dataclass(frozen=True)
class ShardProgress:
    """How far the generation of a sweep's labels is."""

    shards_done: int  # kept from an earlier run, or made now
    shards: int
    sources_made: int  # made now (the rate and the time to go count these)
    sources_left: int
    seconds: float  # since generation started


# Makes the shards it is given ({shard index: its sources}), telling `on_shard(index, texts)`
# as each is done, so that it is kept at once.
MakeShards = Callable[[dict[int, list[np.ndarray]], Callable[[int, list[str]], None]], None]


@dataclass(frozen=True)
class LabelSource:
    """Where a sweep's pseudo-labels came from."""

    path: Path | None = None  # the file they were read from; None: generated now
    shards_kept: int = 0  # shards an interrupted run had made, reused
    shards_made: int = 0  # shards generated now


def pseudo_sources(n_train: int, limit: int | None) -> np.ndarray:
    """Which training sources get pseudo-labels: all, or a seeded sample of `limit`, ascending."""
    if limit is None or limit >= n_train:
        return np.arange(n_train)
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.choice(n_train, size=limit, replace=False))


def label_key(
    model_key: Mapping[str, str],
    sources: TokenRows,
    decoding: DecodingConfig,
    max_target_length: int,
) -> dict[str, str]:
    """The parts of everything the pseudo-labels depend on, each a digest.

    Args:
        model_key: The base model's parts (`trainables.fingerprint.model_key`).
        sources: The token ids of the sources that get labels.
        decoding: The sweep's decoding.
        max_target_length: The labels' length limit.
    """
    return {
        **model_key,
        "sources": rows_digest(sources.values, sources.offsets),
        "decoding": digest_json(dataclasses.asdict(decoding)),
        "max_target_length": digest_json(max_target_length),
    }


def shipped_mismatch(key: Mapping[str, str], shipped: Path | None = None) -> str | None:
    """Why the shipped labels that nearly fit a sweep do not: None when none nearly fit.

    Shipped labels nearly fit when they were made with the sweep's decoding and target length
    for its base model's weights or its sources; the message names the parts that differ.
    """
    anchors = ("decoding", "max_target_length")
    for path in sorted((shipped or SHIPPED).glob("*.json")):
        theirs = _read_key(path)
        if theirs is None or any(theirs.get(a) != key[a] for a in anchors):
            continue
        differ = differing_parts(key, theirs)
        if differ and not {"weights", "sources"} <= set(differ):
            return (
                f"the shipped pseudo-labels {path} were made for this sweep's decoding but "
                f"another {', '.join(differ)}; generating new ones"
            )
    return None


def shard_size(sources: int) -> int:
    """Sources per shard for a set of `sources`."""
    return max(1, min(SHARD_SIZE, math.ceil(sources / MIN_SHARDS)))


def shard_plan(lengths: Sequence[int]) -> list[np.ndarray]:
    """The sources of each shard, as positions: the length-sorted order cut into pieces of
    `shard_size`, so each shard batches sources of like length (little padding)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    size = shard_size(len(order))
    return [order[first : first + size] for first in range(0, len(order), size)]


def shard_texts(
    model: Any, tokenizer: Any, rows: Sequence[np.ndarray], decoding: DecodingConfig
) -> list[str]:
    """The model's summaries of one shard's sources, in the order given."""
    from trainables.scoring import generate_summaries

    return generate_summaries(model, tokenizer, list(rows), decoding, BATCH_SIZE)[0]


def in_process(model: Any, tokenizer: Any, decoding: DecodingConfig) -> MakeShards:
    """Make shards with the model in this process, one after another."""

    def make(
        shards: dict[int, list[np.ndarray]], on_shard: Callable[[int, list[str]], None]
    ) -> None:
        for index, rows in shards.items():
            on_shard(index, shard_texts(model, tokenizer, rows, decoding))

    return make


def add_pseudo_labels(
    data: TokenizedData,
    tokenizer: Any,
    model_key: Mapping[str, str],
    config: DataConfig,
    decoding: DecodingConfig,
    cache: Path | None,
    make_shards: MakeShards | None,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[ShardProgress], None] | None = None,
) -> tuple[TokenizedData, LabelSource]:
    """The data with pseudo-labels for `config.pseudo_examples` training sources, read from
    `cache` when they were made before, else generated shard by shard (`shard_plan`).

    Each shard is kept in the cache as it is made (`<key>.shards-<size>/`, written
    atomically), so a sweep stopped while labeling makes only the missing shards when it runs
    again; the finished labels become one `<key>.json` and the shards go.

    Args:
        data: The tokenized sweep data.
        tokenizer: The base model's tokenizer, for the labels' token ids.
        model_key: The base model's content key (`trainables.fingerprint.model_key`).
        config: The data settings (`pseudo_examples`, `max_target_length`).
        decoding: The sweep's decoding.
        cache: A directory for `<key>.json` files; None: always generate, keep nothing.
        make_shards: Generates shards (`in_process`, or the driver's workers); None: read
            them if made before, else return the data without them.
        warn: Told why, when shipped labels nearly fit but are generated anew.
        progress: Told as each shard is done.

    Returns:
        The data with `pseudo_sources` and `pseudo_labels`, and where they came from.
    """
    indices = pseudo_sources(len(data.train_input_ids), config.pseudo_examples)
    sources = data.train_input_ids.take(indices)
    key = label_key(model_key, sources, decoding, config.max_target_length)
    name = f"{combined_key(key)}.json"
    path = cache / name if cache is not None else None
    for candidate in (path, SHIPPED / name):
        texts = _read_cached(candidate, len(indices))
        if texts is not None:
            return _labeled(data, indices, texts, tokenizer, config), LabelSource(candidate)
    if make_shards is None:  # read only: the data as it is
        return data, LabelSource(None)
    mismatch = shipped_mismatch(key)
    if mismatch and warn is not None:
        warn(mismatch)
    texts, kept, made = _generate(sources, path, make_shards, progress)
    if path is not None:
        _write_atomically(path, {"sources": len(texts), "key": key, "texts": texts})
        shutil.rmtree(_shard_dir(path, len(texts)), ignore_errors=True)
    labeled = _labeled(data, indices, texts, tokenizer, config)
    return labeled, LabelSource(None, kept, made)


def _generate(
    sources: TokenRows,
    path: Path | None,
    make_shards: MakeShards,
    progress: Callable[[ShardProgress], None] | None,
) -> tuple[list[str], int, int]:
    """Every source's label, the shards kept from an earlier run read, the others made and
    kept as they come; returns the labels and the counts of shards kept and made."""
    shards = shard_plan(sources.lengths)
    folder = _shard_dir(path, len(sources)) if path is not None else None
    done = {i: _read_shard(folder, i, len(shard)) for i, shard in enumerate(shards)}
    done = {i: texts for i, texts in done.items() if texts is not None}
    missing = {i: [sources[j] for j in shard] for i, shard in enumerate(shards) if i not in done}
    left = sum(len(rows) for rows in missing.values())
    start = time.perf_counter()

    def on_shard(index: int, texts: list[str]) -> None:
        nonlocal left
        done[index] = texts
        if folder is not None:
            _write_atomically(folder / f"{index:05d}.json", {"shard": index, "texts": texts})
        left -= len(texts)
        if progress is not None:
            made = sum(len(rows) for rows in missing.values()) - left
            seconds = time.perf_counter() - start
            progress(ShardProgress(len(done), len(shards), made, left, seconds))

    make_shards(missing, on_shard)
    labels = [""] * len(sources)
    for i, shard in enumerate(shards):
        for position, text in zip(shard, done[i], strict=True):
            labels[position] = text
    return labels, len(shards) - len(missing), len(missing)


def _labeled(
    data: TokenizedData,
    indices: np.ndarray,
    texts: list[str],
    tokenizer: Any,
    config: DataConfig,
) -> TokenizedData:
    return data.with_pseudo_labels(indices, tokenize_targets(texts, tokenizer, config))


def _shard_dir(path: Path, sources: int) -> Path:
    """Where the shards of the labels file `path` are kept until it is whole."""
    return path.with_name(f"{path.stem}.shards-{shard_size(sources)}")


def _read_shard(folder: Path | None, index: int, count: int) -> list[str] | None:
    """A kept shard's texts, or None (none kept, or an unreadable or partial file)."""
    return _read_cached(folder / f"{index:05d}.json" if folder else None, count)


def _read_cached(path: Path | None, count: int) -> list[str] | None:
    """The cached texts, or None when there are none (or a partial, unreadable file)."""
    if path is None or not path.is_file():
        return None
    try:
        texts = json.loads(path.read_text())["texts"]
    except (OSError, ValueError, KeyError):
        return None
    return texts if len(texts) == count else None


def _read_key(path: Path) -> dict[str, str] | None:
    """The key parts a labels file records, or None (an unreadable file, or one without)."""
    try:
        key = json.loads(path.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None
    return key if isinstance(key, dict) else None


def _write_atomically(path: Path, content: dict[str, Any]) -> None:
    """Write to a sibling and rename, so an interrupted write leaves no partial cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(content, indent=0, ensure_ascii=False))  # a text per line
    partial.replace(path)
