"""Summarization data: load the two splits a sweep uses, check them, tokenize them once.

The driver calls `load_splits` and `tokenize_splits` once per sweep and ships the resulting
`TokenizedData` to every trial through Ray's object store, so it holds only flat numpy
arrays and strings: compact to pickle, and no tokenizer inside.

Every problem a user can cause (a missing file, split or column, a source too long) is raised
as one `DataError` that names it, before any tokenization or training starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from trainables.config import DataConfig, template_columns
from trainables.hub import check_on_hub

BUILTIN_PREFIX = "builtin:"
# Datasets shipped inside the package: name -> directory of {split}.jsonl.gz files.
BUILTIN_DATASETS: dict[str, Path] = {
    "debian-descriptions": Path(__file__).parent / "demo" / "data",
}
BUILTIN_SPLITS = ("train", "validation", "test")
# File suffix (after any .gz) -> the `datasets` builder that reads it.
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(ValueError):
    """A dataset, split, column or example that cannot be used, named in the message."""


# --- Loading -------------------------------------------------------------------------------
LIMIT_SEED = 0  # which rows max_train_examples / max_eval_examples keep
CHECKED_ROWS = 16  # long sources tokenized twice to check how truncation cuts them


def load_splits(data: DataConfig) -> datasets.DatasetDict:
    """Load the training and evaluation splits and check they can be used.

    Args:
        data: Where the data lives (`name` or `files`) and which splits and columns to use.

    Returns:
        A `DatasetDict` with exactly the splits "train" and "eval", each cut to a seeded
        sample of `max_train_examples` / `max_eval_examples` rows when those are set.

    Raises:
        DataError: The dataset or a file is not found, a split does not exist or is empty,
            or a needed column is missing.
    """
    wanted = {"train": data.train_split, "eval": data.eval_split}
    if data.files:
        splits = _load_files(data.files, wanted)
    elif data.name and data.name.startswith(BUILTIN_PREFIX):
        splits = _load_files(builtin_files(data.name), wanted)
    elif data.name:
        splits = _load_named(data.name, data.config_name, wanted)
    else:
        raise DataError("no data: set data.name or data.files")
    limits = {"train": data.max_train_examples, "eval": data.max_eval_examples}
    for role, split in wanted.items():
        if len(splits[role]) == 0:
            raise DataError(f"split {split!r} is empty")
        check_columns(splits[role], data, split)
        if limits[role] is not None and limits[role] < len(splits[role]):
            # A seeded sample, not the first rows: files are often sorted (the demo data is,
            # by package name), and the first rows of a sorted file are not representative.
            sample = np.random.default_rng(LIMIT_SEED).permutation(len(splits[role]))
            splits[role] = splits[role].select(sorted(sample[: limits[role]].tolist()))
    return datasets.DatasetDict(splits)


def builtin_files(name: str) -> dict[str, str]:
    """The split files of a dataset shipped with the package.

    Args:
        name: `builtin:<dataset>`, e.g. `builtin:debian-descriptions`.

    Returns:
        Split name -> path of that split's `.jsonl.gz` file.

    Raises:
        DataError: No such builtin dataset.
    """
    key = name.removeprefix(BUILTIN_PREFIX)
    if key not in BUILTIN_DATASETS:
        known = ", ".join(BUILTIN_PREFIX + k for k in sorted(BUILTIN_DATASETS))
        raise DataError(f"unknown builtin dataset {name!r} (known: {known})")
    folder = BUILTIN_DATASETS[key]
    return {split: str(folder / f"{split}.jsonl.gz") for split in BUILTIN_SPLITS}


def _load_files(files: dict[str, str], wanted: dict[str, str]) -> dict[str, datasets.Dataset]:
    """Load only the files of the wanted splits, each with the builder its suffix names."""
    splits = {}
    for role, split in wanted.items():
        if split not in files:
            raise DataError(f"split {split!r} not found (available: {', '.join(sorted(files))})")
        splits[role] = _load_file(files[split], split)
    return splits


def _load_file(path: str, split: str) -> datasets.Dataset:
    if not Path(path).is_file():
        raise DataError(f"data file not found for split {split!r}: {path}")
    builder = FILE_BUILDERS.get(Path(path.removesuffix(".gz")).suffix.lower())
    if builder is None:
        raise DataError(f"unsupported file type: {path} (jsonl, json, csv, parquet, maybe .gz)")
    if os.path.getsize(path) == 0:
        raise DataError(f"split {split!r} is empty: {path} has no rows")
    try:
        return datasets.load_dataset(builder, data_files=path, split="train")
    except StopIteration:  # what the json builder raises on a file with no records
        raise DataError(f"split {split!r} is empty: {path} has no rows") from None
    except Exception as err:
        raise DataError(f"cannot read {path} (split {split!r}) as {builder}: {err}") from err


def _load_named(
    name: str, config_name: str | None, wanted: dict[str, str]
) -> dict[str, datasets.Dataset]:
    """Load the wanted splits of a local dataset directory or a Hub dataset."""
    if (Path(name) / "dataset_dict.json").is_file():  # written by DatasetDict.save_to_disk
        saved = _attempt(name, None, lambda: datasets.load_from_disk(name))
        _check_splits(name, list(saved), wanted)
        return {role: saved[split] for role, split in wanted.items()}
    if not Path(name).is_dir():
        if _looks_like_path(name):
            raise DataError(f"dataset directory not found: {name}")
        check_on_hub(name, "dataset", DataError)
    try:  # split names come from metadata, so a wrong split fails before any download
        available = datasets.get_dataset_split_names(name, config_name)
    except datasets.inspect.SplitsNotFoundError:
        available = None
    except Exception as err:
        raise DataError(f"cannot load dataset {name!r} (config {config_name!r}): {err}") from err
    if available is not None:
        _check_splits(name, available, wanted)
    splits = list(wanted.values())
    loaded = _attempt(
        name, config_name, lambda: datasets.load_dataset(name, config_name, split=splits)
    )
    return dict(zip(wanted, loaded, strict=True))


def _attempt(name: str, config_name: str | None, load: Callable[[], Any]) -> Any:
    """Call a `datasets` loader, turning its many exception types into one `DataError`."""
    try:
        return load()
    except Exception as err:
        raise DataError(f"cannot load dataset {name!r} (config {config_name!r}): {err}") from err


def _check_splits(name: str, available: list[str], wanted: dict[str, str]) -> None:
    for split in wanted.values():
        if split not in available:
            listed = ", ".join(sorted(available))
            raise DataError(f"split {split!r} not found in {name!r} (available: {listed})")


def _looks_like_path(name: str) -> bool:
    """Hub names are `dataset` or `owner/dataset`; anything else is meant as a directory."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def needed_columns(data: DataConfig) -> list[str]:
    """The columns a dataset must have: the summary and what the source is built from.

    Args:
        data: The data configuration.

    Returns:
        Column names, the source's first and the summary's last, without repeats.
    """
    source = template_columns(data.source_template) if data.source_template else []
    names = source or [data.source_column]
    return list(dict.fromkeys([*names, data.summary_column]))


def check_columns(dataset: datasets.Dataset, data: DataConfig, split: str) -> None:
    """Raise if the split lacks a column the source or the summary is built from.

    Args:
        dataset: One split.
        data: The data configuration naming the columns.
        split: The split's name, for the message.

    Raises:
        DataError: Naming the missing column(s) and listing the available ones.
    """
    missing = [c for c in needed_columns(data) if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"split {split!r} has no column(s) {', '.join(missing)} "
            f"(available: {', '.join(dataset.column_names)})"
        )


# --- Tokenized form ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TokenRows(Sequence[np.ndarray]):
    """Rows of token ids of different lengths, stored as one flat array plus offsets.

    Two arrays pickle far faster and smaller than thousands of small ones, which matters
    because the data is sent to every trial. Indexing returns a view of one row.
    """

    values: np.ndarray  # int32, all rows concatenated
    offsets: np.ndarray  # int64, len(rows) + 1 boundaries; row i is values[offsets[i]:offsets[i+1]]

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> TokenRows:
        """Pack lists of token ids.

        Args:
            rows: Token id rows.

        Returns:
            The packed rows.
        """
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(rows), np.int32, count=offsets[-1])
        return cls(values, offsets)

    @property
    def lengths(self) -> np.ndarray:
        """The length of every row."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def head(self, n: int) -> TokenRows:
        """The first `n` rows (all of them if there are fewer)."""
        n = min(n, len(self))
        return TokenRows(self.values[: self.offsets[n]], self.offsets[: n + 1])

    def take(self, indices: Sequence[int]) -> TokenRows:
        """The rows at `indices`, in that order."""
        rows = [self[int(i)] for i in indices]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        values = np.concatenate(rows) if rows else self.values[:0]
        return TokenRows(values.astype(np.int32, copy=False), offsets)

    def __add__(self, other: TokenRows) -> TokenRows:
        """These rows, then `other`'s."""
        offsets = np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]])
        return TokenRows(np.concatenate([self.values, other.values]), offsets)

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"TokenRows index must be an integer, got {type(index).__name__}")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.values[self.offsets[i] : self.offsets[i + 1]]


@dataclass(frozen=True, eq=False)
class TokenizedData:
    """Everything a trial needs from the data, tokenized once per sweep."""

    train_input_ids: TokenRows
    train_labels: TokenRows
    eval_input_ids: TokenRows
    eval_labels: TokenRows
    eval_references: tuple[str, ...]  # the eval summaries as text, for ROUGE
    truncated_sources: int = 0  # sources cut to max_source_length, both splits together
    # The base model's own summaries (`trainables.pseudo`) of the training sources at
    # `pseudo_sources` (indices into the training split), for `train.targets` pseudo or both.
    pseudo_sources: np.ndarray | None = None
    pseudo_labels: TokenRows | None = None

    def with_targets(self, targets: str) -> TokenizedData:
        """The data a student trains on for `train.targets`: the gold pairs, the pseudo-labeled
        pairs, or both (the gold pairs, then the pseudo-labeled ones).

        Raises:
            ValueError: `targets` needs pseudo-labels and the data has none.
        """
        if targets == "gold":
            return self
        if self.pseudo_labels is None or self.pseudo_sources is None:
            raise ValueError(f"train.targets is {targets!r} but the data has no pseudo-labels")
        sources = self.train_input_ids.take(self.pseudo_sources)
        if targets == "pseudo":
            return dataclasses.replace(
                self, train_input_ids=sources, train_labels=self.pseudo_labels
            )
        return dataclasses.replace(
            self,
            train_input_ids=self.train_input_ids + sources,
            train_labels=self.train_labels + self.pseudo_labels,
        )

    def eval_head(self, n: int) -> TokenizedData:
        """The same data with only the first `n` evaluation pairs: a cheaper evaluation (the
        evaluation split is a seeded sample when `max_eval_examples` is set, so the first
        pairs are a sample too)."""
        return dataclasses.replace(
            self,
            eval_input_ids=self.eval_input_ids.head(n),
            eval_labels=self.eval_labels.head(n),
            eval_references=self.eval_references[:n],
        )


def tokenize_splits(
    splits: datasets.DatasetDict, tokenizer: Any, data: DataConfig
) -> TokenizedData:
    """Tokenize the "train" and "eval" splits made by `load_splits`.

    The source is `source_prefix` + the template filled from the row (or the source column);
    the labels are the summary. Sources are cut to `max_source_length` tokens and labels to
    `max_target_length`, special tokens included.

    Args:
        splits: The output of `load_splits`.
        tokenizer: A Hugging Face tokenizer (a fast one tokenizes a large split in seconds).
        data: The data configuration.

    Returns:
        The tokenized splits and the eval references.

    Raises:
        DataError: A source or summary is null, or `data.truncate` is False and a source is
            longer than `max_source_length`.
    """
    train_ids, train_cut = tokenize_sources(splits["train"], tokenizer, data, "train")
    eval_ids, eval_cut = tokenize_sources(splits["eval"], tokenizer, data, "eval")
    train_summaries = _column_text(splits["train"], data.summary_column, "train")
    eval_summaries = _column_text(splits["eval"], data.summary_column, "eval")
    return TokenizedData(
        train_input_ids=train_ids,
        train_labels=tokenize_targets(train_summaries, tokenizer, data),
        eval_input_ids=eval_ids,
        eval_labels=tokenize_targets(eval_summaries, tokenizer, data),
        eval_references=tuple(eval_summaries),
        truncated_sources=train_cut + eval_cut,
    )


def source_texts(dataset: datasets.Dataset, data: DataConfig, split: str = "") -> list[str]:
    """The model input text of every row: prefix + filled template (or source column).

    Args:
        dataset: One split.
        data: The data configuration.
        split: The split's name, for messages.

    Returns:
        One source text per row.

    Raises:
        DataError: A column the source is built from holds a null value.
    """
    if not data.source_template:
        return [data.source_prefix + t for t in _column_text(dataset, data.source_column, split)]
    names = template_columns(data.source_template)
    columns = {name: _column_text(dataset, name, split) for name in names}
    formatter = string.Formatter()
    return [
        data.source_prefix
        + formatter.vformat(data.source_template, (), {n: columns[n][i] for n in names})
        for i in range(len(dataset))
    ]


def _column_text(dataset: datasets.Dataset, column: str, split: str) -> list[str]:
    values = dataset[column][:]  # one Arrow read; iterating the column reads row by row
    for i, value in enumerate(values):
        if value is None:
            raise DataError(f"split {split!r}, row {i}: column {column!r} is null")
    return [str(v) for v in values]


def tokenize_sources(
    dataset: datasets.Dataset, tokenizer: Any, data: DataConfig, split: str = ""
) -> tuple[TokenRows, int]:
    """Token ids of one split's sources, cut to `max_source_length`, and how many were cut.

    Tokenizing to one token past the limit finds the long sources (without the tokenizer's
    "sequence too long" warning); `_cut_to_limit` then cuts them to the limit.

    Args:
        dataset: One split.
        tokenizer: A Hugging Face tokenizer; its special tokens are added.
        data: The data configuration (template, prefix, `max_source_length`, `truncate`).
        split: The split's name, for messages.

    Returns:
        The token ids of every row's source, and the number of sources truncated.

    Raises:
        DataError: A source column holds a null value, or `data.truncate` is False and a
            source is longer than `max_source_length`.
    """
    texts = source_texts(dataset, data, split)
    limit = data.max_source_length
    rows = _encode(tokenizer, texts, limit + 1)
    long = [i for i, row in enumerate(rows) if len(row) > limit]
    if long and not data.truncate:
        first = long[0]
        raise DataError(
            f"{len(long)} of {len(rows)} sources in split {split!r} are longer than "
            f"max_source_length={limit} tokens; the first is row {first} "
            f"({texts[first][:60]!r}...). Raise data.max_source_length or set data.truncate"
        )
    _cut_to_limit(tokenizer, texts, rows, long, limit)
    return TokenRows.from_lists(rows), len(long)


def _cut_to_limit(
    tokenizer: Any, texts: list[str], rows: list[list[int]], long: list[int], limit: int
) -> None:
    """Cut the `long` rows, tokenized to `limit + 1` tokens, to `limit` tokens, in place.

    Most sources of a summarization dataset are long, and tokenizing them a second time took
    as long as the first pass. The tokenizer's truncation keeps its special tokens and drops
    one content token (the last, or the first when it truncates on the left), at the same
    position in every row, since all long rows have the same length. That position is the one
    that, dropped, turns each of a sample of long rows into the same row tokenized at the
    limit; if no position does, every long row is tokenized again at the limit.
    """
    if not long:
        return
    sample = long[:: max(1, len(long) // CHECKED_ROWS)][:CHECKED_ROWS]
    truth = dict(zip(sample, _encode(tokenizer, [texts[i] for i in sample], limit), strict=True))
    dropped = [
        p
        for p in range(limit + 1)
        if all(rows[i][:p] + rows[i][p + 1 :] == truth[i] for i in sample)
    ]
    if dropped:
        for i in long:
            del rows[i][dropped[0]]
        return
    for i, row in zip(long, _encode(tokenizer, [texts[i] for i in long], limit), strict=True):
        rows[i] = row


def tokenize_targets(summaries: list[str], tokenizer: Any, data: DataConfig) -> TokenRows:
    """Summaries as labels: tokenized as targets, cut to `max_target_length` tokens."""
    ids = tokenizer(
        text_target=summaries,
        truncation=True,
        max_length=data.max_target_length,
        return_attention_mask=False,
    )["input_ids"]
    return TokenRows.from_lists(ids)


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False)[
        "input_ids"
    ]


# --- Fit to the model ----------------------------------------------------------------------


def check_source_length(data: DataConfig, model_config: Any) -> None:
    """Raise if the model cannot read sources as long as `max_source_length`.

    Models with learned absolute positions (BART, Pegasus, ...) have a hard limit,
    `max_position_embeddings` (`max_encoder_position_embeddings` for LED); a longer input
    indexes past the table and fails mid-trial. T5 uses relative positions and has no hard
    limit, so it always passes. The check does not depend on `data.truncate`: truncation
    cuts to `max_source_length`, which must itself fit.

    Args:
        data: The data configuration.
        model_config: The model's `PretrainedConfig`.

    Raises:
        DataError: `max_source_length` exceeds the model's positions.
    """
    limit = getattr(model_config, "max_encoder_position_embeddings", None) or getattr(
        model_config, "max_position_embeddings", None
    )
    if limit is not None and data.max_source_length > limit:
        raise DataError(
            f"max_source_length={data.max_source_length} exceeds the {limit} positions the "
            f"model ({model_config.model_type}) can read; set data.max_source_length <= {limit}"
        )
