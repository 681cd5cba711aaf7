"""Pseudo-labels: the base model's own summaries of the training sources, for students to learn
from (the PL variant of Shleifer & Rush 2020).

They are generated once per sweep with the sweep's decoding and kept in a cache directory keyed
by a hash of what they depend on (the base model's files, the sources' token ids, the decoding
and the target length), so a second sweep of the same model, data and decoding reuses them and a
change of any of these makes new ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import DataConfig, DecodingConfig
from trainables.data import TokenizedData, TokenRows, tokenize_targets

# Made by the demo teacher for the default sweep (`data.pseudo_examples: 8000`, its decoding),
# shipped so that the README's first command does not spend minutes making them again; any
# other model, data or decoding has another key and is generated as usual.
SHIPPED = Path(__file__).parent / "demo" / "pseudo-labels"
CHUNK = 512  # sources per progress report
BATCH_SIZE = 64  # sources per `generate` call
SAMPLE_SEED = 0

Progress = Callable[[int, int, float], None]  # (sources done, sources in all, seconds so far)


def pseudo_sources(n_train: int, limit: int | None) -> np.ndarray:
    """Which training sources get pseudo-labels: all, or a seeded sample of `limit`, ascending."""
    if limit is None or limit >= n_train:
        return np.arange(n_train)
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.choice(n_train, size=limit, replace=False))


def cache_key(
    model_files: Mapping[str, bytes],
    sources: TokenRows,
    decoding: DecodingConfig,
    max_target_length: int,
) -> str:
    """A hash of everything the pseudo-labels depend on."""
    digest = hashlib.sha256()
    for name in sorted(model_files):
        digest.update(name.encode())
        digest.update(hashlib.sha256(model_files[name]).digest())
    digest.update(np.ascontiguousarray(sources.values, dtype=np.int32).tobytes())
    digest.update(np.ascontiguousarray(sources.offsets, dtype=np.int64).tobytes())
    settings = {**dataclasses.asdict(decoding), "max_target_length": max_target_length}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def generate_texts(
    model: Any,
    tokenizer: Any,
    sources: Sequence[np.ndarray],
    decoding: DecodingConfig,
    progress: Progress | None = None,
) -> list[str]:
    """The model's summary of every source, shortest sources first in batches (little
    padding), reported every `CHUNK` sources.

    Returns:
        The summaries in the order of `sources`.
    """
    from trainables.scoring import generate_summaries

    order = np.argsort([len(s) for s in sources], kind="stable")
    texts = [""] * len(sources)
    start = time.perf_counter()
    for first in range(0, len(order), CHUNK):
        chunk = order[first : first + CHUNK]
        summaries, _ = generate_summaries(
            model, tokenizer, [sources[i] for i in chunk], decoding, BATCH_SIZE
        )
        for i, text in zip(chunk, summaries, strict=True):
            texts[i] = text
        if progress is not None:
            progress(first + len(chunk), len(order), time.perf_counter() - start)
    return texts


def add_pseudo_labels(
    data: TokenizedData,
    model: Any,
    tokenizer: Any,
    model_files: Mapping[str, bytes],
    config: DataConfig,
    decoding: DecodingConfig,
    cache: Path | None,
    progress: Progress | None = None,
) -> tuple[TokenizedData, Path | None]:
    """The data with pseudo-labels for `config.pseudo_examples` training sources, read from
    `cache` when they were made before, else generated (and kept there).

    Args:
        data: The tokenized sweep data.
        model: The base model, which writes the labels.
        tokenizer: Its tokenizer.
        model_files: The base model's saved files (part of the cache key).
        config: The data settings (`pseudo_examples`, `max_target_length`).
        decoding: The sweep's decoding.
        cache: A directory for `<key>.json` files; None: always generate.
        progress: Told of generation progress.

    Returns:
        The data with `pseudo_sources` and `pseudo_labels`, and the file they were read from
        (in the cache, or the shipped demo labels `SHIPPED`), None if they were generated.
    """
    indices = pseudo_sources(len(data.train_input_ids), config.pseudo_examples)
    sources = data.train_input_ids.take(indices)
    name = f"{cache_key(model_files, sources, decoding, config.max_target_length)}.json"
    path = cache / name if cache is not None else None
    texts, source = None, None
    for candidate in (path, SHIPPED / name):
        texts = _read_cached(candidate, len(indices))
        if texts is not None:
            source = candidate
            break
    if texts is None:
        texts = generate_texts(model, tokenizer, sources, decoding, progress)
        if path is not None:
            _write_atomically(path, {"sources": len(texts), "texts": texts})
    labels = tokenize_targets(texts, tokenizer, config)
    labeled = dataclasses.replace(data, pseudo_sources=indices, pseudo_labels=labels)
    return labeled, source


def _read_cached(path: Path | None, count: int) -> list[str] | None:
    """The cached texts, or None when there are none (or a partial, unreadable file)."""
    if path is None or not path.is_file():
        return None
    try:
        texts = json.loads(path.read_text())["texts"]
    except (OSError, ValueError, KeyError):
        return None
    return texts if len(texts) == count else None


def _write_atomically(path: Path, content: dict[str, Any]) -> None:
    """Write to a sibling and rename, so an interrupted write leaves no partial cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(content, indent=0, ensure_ascii=False))  # a text per line
    partial.replace(path)
