"""Summarization data: load the two splits a sweep uses, check them, and read their texts.

Every problem a user can cause (a missing file, split or column, a null value, a source too
long for the model) is raised as one `DataError` that names it, before any tokenization or
training starts. Tokenizing the texts is `trainables.tokens`.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
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


def source_texts(
    dataset: datasets.Dataset, data: DataConfig, split: str = "", rows: range | None = None
) -> list[str]:
    """The model input text of every row (or of `rows`): prefix + filled template (or source
    column).

    Args:
        dataset: One split.
        data: The data configuration.
        split: The split's name, for messages.
        rows: The rows to read, a slice of the split; default all.

    Returns:
        One source text per row.

    Raises:
        DataError: A column the source is built from holds a null value.
    """
    rows = rows or range(len(dataset))
    if not data.source_template:
        texts = column_text(dataset, data.source_column, split, rows)
        return [data.source_prefix + t for t in texts]
    names = template_columns(data.source_template)
    columns = {name: column_text(dataset, name, split, rows) for name in names}
    formatter = string.Formatter()
    return [
        data.source_prefix
        + formatter.vformat(data.source_template, (), {n: columns[n][i] for n in names})
        for i in range(len(rows))
    ]


def column_text(
    dataset: datasets.Dataset, column: str, split: str, rows: range | None = None
) -> list[str]:
    """The values of one column (at `rows`, default all) as text; a null value is a
    DataError naming its row."""
    rows = rows or range(len(dataset))
    values = dataset[column][rows.start : rows.stop]  # one Arrow read, not one per row
    for i, value in enumerate(values):
        if value is None:
            raise DataError(f"split {split!r}, row {rows.start + i}: column {column!r} is null")
    return [str(v) for v in values]


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
