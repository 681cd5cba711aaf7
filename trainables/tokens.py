"""Summarization data tokenized once per sweep: `tokenize_splits` turns the splits `load_splits`
read into `TokenizedData`, flat numpy arrays and strings that the driver ships to every trial
through Ray's object store: compact to pickle, and no tokenizer inside.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from trainables.config import DataConfig
from trainables.data import CHECKED_ROWS, DataError, column_text, source_texts

# Rows tokenized at a time: one chunk's texts and token lists are all the Python objects the
# driver holds beside the packed arrays (~200 bytes a token), whatever the split's size.
CHUNK_ROWS = 8192

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

    @classmethod
    def concat(cls, parts: Sequence[TokenRows]) -> TokenRows:
        """The rows of every part, in order, in one pair of arrays."""
        if not parts:
            return cls.from_lists([])
        ends = np.cumsum([p.offsets[-1] for p in parts])[:-1]
        shifted = [parts[0].offsets] + [
            p.offsets[1:] + end for p, end in zip(parts[1:], ends, strict=True)
        ]
        values = np.concatenate([p.values for p in parts]).astype(np.int32, copy=False)
        return cls(values, np.concatenate(shifted))

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
    return TokenizedData(
        train_input_ids=train_ids,
        train_labels=tokenize_summaries(splits["train"], tokenizer, data, "train"),
        eval_input_ids=eval_ids,
        eval_labels=tokenize_summaries(splits["eval"], tokenizer, data, "eval"),
        eval_references=tuple(column_text(splits["eval"], data.summary_column, "eval")),
        truncated_sources=train_cut + eval_cut,
    )


def tokenize_sources(
    dataset: datasets.Dataset, tokenizer: Any, data: DataConfig, split: str = ""
) -> tuple[TokenRows, int]:
    """Token ids of one split's sources, cut to `max_source_length`, and how many were cut.

    `CHUNK_ROWS` rows at a time, each chunk packed into arrays before the next is read, so
    the driver never holds a large split's texts and token lists at once. Tokenizing to one
    token past the limit finds the long sources (without the tokenizer's "sequence too long"
    warning); `_cut_to_limit` then cuts them to the limit.

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
    limit = data.max_source_length
    parts, cut, first_long = [], 0, None
    for rows in _chunks(len(dataset)):
        texts = source_texts(dataset, data, split, rows)
        ids = _encode(tokenizer, texts, limit + 1)
        long = [i for i, row in enumerate(ids) if len(row) > limit]
        if long and first_long is None:
            first_long = (rows.start + long[0], texts[long[0]])
        cut += len(long)
        if data.truncate:
            _cut_to_limit(tokenizer, texts, ids, long, limit)
        parts.append(TokenRows.from_lists(ids))
    if first_long is not None and not data.truncate:
        row, text = first_long
        raise DataError(
            f"{cut} of {len(dataset)} sources in split {split!r} are longer than "
            f"max_source_length={limit} tokens; the first is row {row} "
            f"({text[:60]!r}...). Raise data.max_source_length or set data.truncate"
        )
    return TokenRows.concat(parts), cut


def tokenize_summaries(
    dataset: datasets.Dataset, tokenizer: Any, data: DataConfig, split: str = ""
) -> TokenRows:
    """One split's summaries as labels (`tokenize_targets`), `CHUNK_ROWS` rows at a time."""
    parts = [
        tokenize_targets(column_text(dataset, data.summary_column, split, rows), tokenizer, data)
        for rows in _chunks(len(dataset))
    ]
    return TokenRows.concat(parts)


def _chunks(count: int) -> list[range]:
    return [range(first, min(first + CHUNK_ROWS, count)) for first in range(0, count, CHUNK_ROWS)]


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
