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

# A fast tokenizer holds ~175 bytes for every token of the texts it encodes, truncated or not
# (8,192 CNN/DailyMail-shaped sources of ~2,400 tokens took 3.4 GB), and takes as long for the
# tokens it drops as for the ones it keeps. So a long source is cut, before it is tokenized,
# after about the characters `max_source_length` tokens use (`_encode_heads`), and the rows are
# tokenized in chunks of at most CHUNK_CHARS characters (and CHUNK_ROWS rows).
CHARS_PER_TOKEN = 8  # at most (and in the first chunk): a source is cut after limit * 8 chars
HEAD_MARGIN = 1.25  # later chunks: 1.25 x the characters a sample of long sources used
CHUNK_CHARS = 16_000_000
CHUNK_ROWS = 8192

# --- Tokenized form ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TokenRows(Sequence[np.ndarray]):
    """Rows of token ids of different lengths, stored as one flat array plus offsets.

    Two arrays pickle far faster and smaller than thousands of small ones, which matters
    because the data is sent to every trial, and Ray hands a trial numpy arrays from its object
    store without a copy. Indexing returns a view of one row. A selection (`select`, and `+` of
    rows of one storage) is the storage plus the chosen rows' positions: what a trial trains on
    is picked from the data it was sent without copying any token.
    """

    values: np.ndarray  # int32, all rows concatenated
    offsets: np.ndarray  # int64, len(rows) + 1 boundaries; row i is values[offsets[i]:offsets[i+1]]
    index: np.ndarray | None = None  # int64, the rows' positions in the storage; None: all

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
        lengths = np.diff(self.offsets)
        return lengths if self.index is None else lengths[self.index]

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.index is None else len(self.index)

    def head(self, n: int) -> TokenRows:
        """The first `n` rows (all of them if there are fewer)."""
        n = min(n, len(self))
        if self.index is not None:
            return TokenRows(self.values, self.offsets, self.index[:n])
        return TokenRows(self.values[: self.offsets[n]], self.offsets[: n + 1])

    def select(self, rows: Sequence[int] | np.ndarray) -> TokenRows:
        """The rows at `rows`, in that order, in this storage: nothing is copied. Pickled, a
        selection carries the whole storage; to send a few rows elsewhere, `take` them."""
        return TokenRows(self.values, self.offsets, self._positions(rows))

    def take(self, rows: Sequence[int] | np.ndarray) -> TokenRows:
        """The rows at `rows`, in that order, copied into a storage of their own."""
        picked = [self[int(i)] for i in rows]
        offsets = np.zeros(len(picked) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in picked], out=offsets[1:])
        values = np.concatenate(picked) if picked else self.values[:0]
        return TokenRows(values.astype(np.int32, copy=False), offsets)

    def __add__(self, other: TokenRows) -> TokenRows:
        """These rows, then `other`'s: a selection when both are rows of one storage (nothing
        copied), else a copy."""
        if other.values is self.values and other.offsets is self.offsets:
            positions = [rows._positions(np.arange(len(rows))) for rows in (self, other)]
            return TokenRows(self.values, self.offsets, np.concatenate(positions))
        first, then = (r if r.index is None else r.take(range(len(r))) for r in (self, other))
        offsets = np.concatenate([first.offsets, then.offsets[1:] + first.offsets[-1]])
        return TokenRows(np.concatenate([first.values, then.values]), offsets)

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"TokenRows index must be an integer, got {type(index).__name__}")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        if self.index is not None:
            index = self.index[index]
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        positions = range(len(self)) if self.index is None else self.index
        for i in positions:
            yield self.values[self.offsets[i] : self.offsets[i + 1]]

    def _positions(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return rows if self.index is None else self.index[rows]


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

    def with_pseudo_labels(self, sources: np.ndarray, labels: TokenRows) -> TokenizedData:
        """This data with `labels` for the training sources at `sources`, kept in one storage
        with the gold labels (made here, once, for the sweep), so that `with_targets` picks
        either or both without copying a token."""
        gold = len(self.train_labels)
        pool = self.train_labels + labels
        return dataclasses.replace(
            self,
            train_labels=pool.select(np.arange(gold)),
            pseudo_sources=sources,
            pseudo_labels=pool.select(np.arange(gold, gold + len(labels))),
        )

    def with_targets(self, targets: str) -> TokenizedData:
        """The data a student trains on for `train.targets`: the gold pairs, the pseudo-labeled
        pairs, or both (the gold pairs, then the pseudo-labeled ones). Selections of the rows
        this data holds: no token is copied (see `with_pseudo_labels`).

        Raises:
            ValueError: `targets` needs pseudo-labels and the data has none.
        """
        if targets == "gold":
            return self
        if self.pseudo_labels is None or self.pseudo_sources is None:
            raise ValueError(f"train.targets is {targets!r} but the data has no pseudo-labels")
        sources = self.train_input_ids.select(self.pseudo_sources)
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

    def eval_only(self) -> TokenizedData:
        """The evaluation pairs alone, without the training rows: all that scoring reads, and
        small to send to the preparation's workers."""
        none = TokenRows.from_lists([])
        return TokenizedData(
            none, none, self.eval_input_ids, self.eval_labels, self.eval_references
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

    In chunks (`CHUNK_CHARS`), each packed into the split's array before the next is read, so
    the driver never holds a large split's texts and token lists at once. Tokenizing to one
    token past the limit finds the long sources (without the tokenizer's "sequence too long"
    warning); `_cut_to_limit` then cuts them to the limit. Only the head of a long text is
    tokenized (`_encode_heads`).

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
    packed = _Packer(len(dataset), limit + 1)
    cut, first_long, chars_per_token = 0, None, float(CHARS_PER_TOKEN)
    for rows in _chunks(len(dataset), limit + 1):
        texts = source_texts(dataset, data, split, rows)
        ids, chars_per_token = _encode_heads(tokenizer, texts, limit + 1, chars_per_token)
        long = [i for i, row in enumerate(ids) if len(row) > limit]
        if long and first_long is None:
            first_long = (rows.start + long[0], texts[long[0]])
        cut += len(long)
        if data.truncate:
            _cut_to_limit(tokenizer, texts, ids, long, limit)
        packed.add(ids)
    if first_long is not None and not data.truncate:
        row, text = first_long
        raise DataError(
            f"{cut} of {len(dataset)} sources in split {split!r} are longer than "
            f"max_source_length={limit} tokens; the first is row {row} "
            f"({text[:60]!r}...). Raise data.max_source_length or set data.truncate"
        )
    return packed.rows(), cut


def tokenize_summaries(
    dataset: datasets.Dataset, tokenizer: Any, data: DataConfig, split: str = ""
) -> TokenRows:
    """One split's summaries as labels (`tokenize_targets`), in chunks like the sources."""
    packed = _Packer(len(dataset), data.max_target_length)
    for rows in _chunks(len(dataset), data.max_target_length):
        summaries = column_text(dataset, data.summary_column, split, rows)
        packed.add(_encode(tokenizer, summaries, data.max_target_length, target=True))
    return packed.rows()


def _chunks(count: int, max_tokens: int) -> list[range]:
    """Rows in chunks of at most CHUNK_CHARS characters of texts cut for `max_tokens`."""
    size = max(1, min(CHUNK_ROWS, CHUNK_CHARS // (max_tokens * CHARS_PER_TOKEN)))
    return [range(first, min(first + size, count)) for first in range(0, count, size)]


class _Packer:
    """Rows of at most `width` token ids, added chunk by chunk into one array sized for the
    worst case and trimmed in place at the end: the pages no row reaches are never touched
    (so cost no memory), and the split's ids are never held twice."""

    def __init__(self, rows: int, width: int):
        self.values = np.empty(rows * width, dtype=np.int32)
        self.offsets = np.zeros(rows + 1, dtype=np.int64)
        self.width = width
        self.count = 0

    def add(self, rows: list[list[int]]) -> None:
        lengths = [len(r) for r in rows]
        if max(lengths, default=0) > self.width:
            raise ValueError(f"a row of {max(lengths)} tokens, more than {self.width}")
        first = self.count
        np.cumsum(lengths, out=self.offsets[first + 1 : first + 1 + len(rows)])
        self.offsets[first + 1 : first + 1 + len(rows)] += self.offsets[first]
        start, end = self.offsets[first], self.offsets[first + len(rows)]
        self.values[start:end] = np.fromiter(
            itertools.chain.from_iterable(rows), np.int32, count=end - start
        )
        self.count += len(rows)

    def rows(self) -> TokenRows:
        if self.count != len(self.offsets) - 1:
            raise ValueError(f"{self.count} of {len(self.offsets) - 1} rows were added")
        self.values.resize(int(self.offsets[-1]), refcheck=False)
        return TokenRows(self.values, self.offsets)


def _encode_heads(
    tokenizer: Any, texts: list[str], max_length: int, chars_per_token: float
) -> tuple[list[list[int]], float]:
    """`_encode(tokenizer, texts, max_length)`, tokenizing only the head of long texts, and
    how many characters per token to keep of the next chunk's texts.

    A text of more than `max_length * chars_per_token` characters is cut there, at a
    whitespace (from the start when the tokenizer truncates on the left). Tokenizers split
    words at whitespace before anything else, so the cut text's first tokens are the whole
    text's. A cut text that yields fewer than `max_length` tokens is tokenized again whole, and
    so is every cut text when a sample of the long texts, tokenized whole, shows one that
    tokenizes otherwise (a tokenizer that looks across words). The same sample measures the
    characters the first `max_length` tokens take, which sets the next chunk's cut.
    """
    left = getattr(tokenizer, "truncation_side", "right") == "left"
    heads, whole = [], {}
    for i, text in enumerate(texts):
        head = _head(text, int(max_length * chars_per_token), left)
        if head is not text:
            whole[i] = text
        heads.append(head)
    ids = _encode(tokenizer, heads, max_length)
    long = [i for i, row in enumerate(ids) if len(row) == max_length]
    sample = long[:: max(1, len(long) // CHECKED_ROWS)][:CHECKED_ROWS]
    truth, reach = _encode_with_reach(tokenizer, [texts[i] for i in sample], max_length, left)
    again = [i for i in whole if len(ids[i]) < max_length]
    if any(ids[i] != row for i, row in zip(sample, truth, strict=True) if i in whole):
        again = list(whole)
    for i, row in zip(
        again, _encode(tokenizer, [whole[i] for i in again], max_length), strict=True
    ):
        ids[i] = row
    if reach:
        chars_per_token = min(CHARS_PER_TOKEN, HEAD_MARGIN * max(reach) / max_length)
    return ids, chars_per_token


def _encode_with_reach(
    tokenizer: Any, texts: list[str], max_length: int, from_end: bool
) -> tuple[list[list[int]], list[int]]:
    """`_encode(tokenizer, texts, max_length)`, and how many characters of each text its
    tokens cover (none when the tokenizer has no character offsets: a slow one)."""
    if not texts:
        return [], []
    try:
        encoded = tokenizer(
            texts,
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_offsets_mapping=True,
        )
    except NotImplementedError:  # transformers' answer for a tokenizer without offsets
        return _encode(tokenizer, texts, max_length), []
    reach = []
    for text, offsets in zip(texts, encoded["offset_mapping"], strict=True):
        spans = [(start, end) for start, end in offsets if end > start]  # specials are (0, 0)
        if not spans:
            return encoded["input_ids"], []
        used = len(text) - min(s for s, _ in spans) if from_end else max(e for _, e in spans)
        reach.append(used)
    return encoded["input_ids"], reach


def _head(text: str, chars: int, from_end: bool) -> str:
    """`text` cut to at most `chars` characters at a whitespace, keeping its start (or its
    end); `text` itself if it is not longer, or has no whitespace to cut at."""
    if len(text) <= chars:
        return text
    if from_end:
        parts = text[-chars:].split(None, 1)
        return parts[1] if len(parts) == 2 else text
    parts = text[:chars].rsplit(None, 1)
    return parts[0] if len(parts) == 2 else text


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
    return TokenRows.from_lists(_encode(tokenizer, summaries, data.max_target_length, target=True))


def _encode(
    tokenizer: Any, texts: list[str], max_length: int, target: bool = False
) -> list[list[int]]:
    if not texts:
        return []
    text = {"text_target": texts} if target else {"text": texts}
    return tokenizer(**text, truncation=True, max_length=max_length, return_attention_mask=False)[
        "input_ids"
    ]
