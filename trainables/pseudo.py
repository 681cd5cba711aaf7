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
import os
import time
from collections.abc import Callable, Mapping, Sequence
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
    model_key: Mapping[str, str],
    config: DataConfig,
    decoding: DecodingConfig,
    cache: Path | None,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[TokenizedData, Path | None]:
    """The data with pseudo-labels for `config.pseudo_examples` training sources, read from
    `cache` when they were made before, else generated (and kept there).

    Args:
        data: The tokenized sweep data.
        model: The base model, which writes the labels.
        tokenizer: Its tokenizer.
        model_key: The base model's content key (`trainables.fingerprint.model_key`).
        config: The data settings (`pseudo_examples`, `max_target_length`).
        decoding: The sweep's decoding.
        cache: A directory for `<key>.json` files; None: always generate.
        progress: Told of generation progress.
        warn: Told why, when shipped labels nearly fit but are generated anew.

    Returns:
        The data with `pseudo_sources` and `pseudo_labels`, and the file they were read from
        (in the cache, or the shipped demo labels `SHIPPED`), None if they were generated.
    """
    indices = pseudo_sources(len(data.train_input_ids), config.pseudo_examples)
    sources = data.train_input_ids.take(indices)
    key = label_key(model_key, sources, decoding, config.max_target_length)
    name = f"{combined_key(key)}.json"
    path = cache / name if cache is not None else None
    texts, source = None, None
    for candidate in (path, SHIPPED / name):
        texts = _read_cached(candidate, len(indices))
        if texts is not None:
            source = candidate
            break
    if texts is None:
        mismatch = shipped_mismatch(key)
        if mismatch and warn is not None:
            warn(mismatch)
        texts = generate_texts(model, tokenizer, sources, decoding, progress)
        if path is not None:
            _write_atomically(path, {"sources": len(texts), "key": key, "texts": texts})
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
