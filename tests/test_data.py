"""Loading, checking and tokenizing the data: every error path names its problem."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import shutil
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pytest
from huggingface_hub.errors import RepositoryNotFoundError
from tiny import EOS_ID, TINY_DATA, tiny_tokenizer
from transformers import BartConfig, T5Config

import trainables
from trainables import data as data_module
from trainables import tokens as tokens_module
from trainables.config import DataConfig
from trainables.data import DataError, builtin_files, check_source_length, load_splits
from trainables.tokens import TokenRows, tokenize_splits

FILES = {
    "train": str(TINY_DATA / "train.jsonl"),
    "validation": str(TINY_DATA / "validation.jsonl"),
}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the Arrow files `datasets` writes for test inputs out of the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# --- Loading -------------------------------------------------------------------------------


def test_files_load_as_train_and_eval_in_file_order():
    splits = load_splits(DataConfig(files=FILES))
    assert set(splits) == {"train", "eval"}
    assert (len(splits["train"]), len(splits["eval"])) == (200, 30)
    assert splits["eval"][0] == read_rows(TINY_DATA / "validation.jsonl")[0]


def test_example_limits_keep_a_seeded_sample_in_file_order():
    config = DataConfig(files=FILES, max_train_examples=7, max_eval_examples=500)
    splits = load_splits(config)
    assert (len(splits["train"]), len(splits["eval"])) == (7, 30)
    documents = [r["document"] for r in read_rows(TINY_DATA / "train.jsonl")]
    positions = [documents.index(d) for d in splits["train"]["document"]]
    assert positions == sorted(positions)
    assert max(positions) > 100  # spread over the file, not its first rows
    assert list(load_splits(config)["train"]["document"]) == list(splits["train"]["document"])


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".csv", ".parquet"])
def test_the_file_suffix_picks_the_reader(tmp_path, suffix):
    rows = read_rows(TINY_DATA / "validation.jsonl")
    table = datasets.Dataset.from_list(rows)
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        table.to_csv(str(path), index=False)
    elif suffix == ".parquet":
        table.to_parquet(str(path))
    else:
        path.write_bytes(gzip.compress((TINY_DATA / "validation.jsonl").read_bytes()))
    splits = load_splits(DataConfig(files={"train": str(path), "validation": str(path)}))
    assert list(splits["train"]["summary"]) == [r["summary"] for r in rows]


def test_missing_file_is_named(tmp_path):
    missing = str(tmp_path / "nowhere.jsonl")
    with pytest.raises(DataError, match=re.escape(f"not found for split 'validation': {missing}")):
        load_splits(DataConfig(files={"train": FILES["train"], "validation": missing}))


def test_unknown_split_lists_the_available_ones():
    with pytest.raises(DataError, match=r"split 'test' not found \(available: train, validation\)"):
        load_splits(DataConfig(files=FILES, eval_split="test"))


def test_empty_file_is_an_empty_split(tmp_path):
    (tmp_path / "empty.jsonl").touch()
    files = {"train": FILES["train"], "validation": str(tmp_path / "empty.jsonl")}
    with pytest.raises(DataError, match="split 'validation' is empty"):
        load_splits(DataConfig(files=files))


def test_missing_column_is_named_with_the_available_ones():
    with pytest.raises(
        DataError,
        match=re.escape("split 'train' has no column(s) abstract (available: document, summary,"),
    ):
        load_splits(DataConfig(files=FILES, summary_column="abstract"))


def test_missing_template_column_is_named():
    config = DataConfig(files=FILES, source_template="{package}: {description} ({homepage})")
    with pytest.raises(DataError, match=r"no column\(s\) description, homepage \("):
        load_splits(config)


def test_builtin_name_resolves_to_the_package_data():
    files = builtin_files("builtin:debian-descriptions")
    folder = Path(trainables.__file__).parent / "demo" / "data"
    assert files == {s: str(folder / f"{s}.jsonl.gz") for s in ("train", "validation", "test")}


def test_builtin_dataset_loads_from_its_folder(tmp_path, monkeypatch):
    for split in ("train", "validation"):
        source = TINY_DATA / f"{split}.jsonl"
        (tmp_path / f"{split}.jsonl.gz").write_bytes(gzip.compress(source.read_bytes()))
    monkeypatch.setitem(data_module.BUILTIN_DATASETS, "debian-descriptions", tmp_path)
    splits = load_splits(DataConfig(name="builtin:debian-descriptions", max_train_examples=5))
    assert (len(splits["train"]), len(splits["eval"])) == (5, 30)
    # The test split has no file here: asking for it names the missing file.
    with pytest.raises(DataError, match=r"not found for split 'test': .*test\.jsonl\.gz"):
        load_splits(DataConfig(name="builtin:debian-descriptions", eval_split="test"))


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(DataError, match=r"unknown builtin dataset .* builtin:debian-descriptions"):
        load_splits(DataConfig(name="builtin:wikipedia"))


def test_local_dataset_directory_loads_and_checks_splits(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    for split in ("train", "validation"):
        shutil.copy(TINY_DATA / f"{split}.jsonl", folder / f"{split}.jsonl")
    splits = load_splits(DataConfig(name=str(folder)))
    assert (len(splits["train"]), len(splits["eval"])) == (200, 30)
    with pytest.raises(DataError, match=r"split 'dev' not found in .* \(available: train, valid"):
        load_splits(DataConfig(name=str(folder), eval_split="dev"))


def test_saved_dataset_dict_loads_from_disk(tmp_path):
    saved = load_splits(DataConfig(files=FILES))
    datasets.DatasetDict({"train": saved["train"], "dev": saved["eval"]}).save_to_disk(
        str(tmp_path / "saved")
    )
    splits = load_splits(DataConfig(name=str(tmp_path / "saved"), eval_split="dev"))
    assert splits["eval"]["summary"][:3] == saved["eval"]["summary"][:3]


def test_missing_dataset_directory_is_named():
    with pytest.raises(DataError, match=re.escape("dataset directory not found: ./no/such/dir")):
        load_splits(DataConfig(name="./no/such/dir"))


def test_unknown_hub_dataset_fails_at_once(monkeypatch):
    class NotFound(RepositoryNotFoundError):
        def __init__(self) -> None:
            Exception.__init__(self, "404")

    def dataset_info(name: str, timeout: float) -> None:
        raise NotFound()

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "dataset_info", dataset_info)
    with pytest.raises(DataError, match="dataset 'someone/no-such-data' not found"):
        load_splits(DataConfig(name="someone/no-such-data"))


def test_unreachable_hub_says_so(monkeypatch):
    def dataset_info(name: str, timeout: float) -> None:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "dataset_info", dataset_info)
    with pytest.raises(DataError, match="cannot reach the Hub to load dataset 'xsum'"):
        load_splits(DataConfig(name="xsum"))


# --- Tokenizing ----------------------------------------------------------------------------


def test_tokenized_shapes_and_references(tokenizer):
    config = DataConfig(files=FILES, max_source_length=64, max_target_length=24)
    data = tokenize_splits(load_splits(config), tokenizer, config)
    assert (len(data.train_input_ids), len(data.train_labels)) == (200, 200)
    assert (len(data.eval_input_ids), len(data.eval_labels)) == (30, 30)
    references = [r["summary"] for r in read_rows(TINY_DATA / "validation.jsonl")]
    assert data.eval_references == tuple(references)
    first = read_rows(TINY_DATA / "train.jsonl")[0]
    assert data.train_input_ids[0].tolist() == tokenizer(first["document"])["input_ids"]
    assert data.train_labels[0].tolist() == tokenizer(first["summary"])["input_ids"]
    assert data.train_input_ids.values.dtype == np.int32


def test_prefix_and_template_build_the_source(tokenizer):
    config = DataConfig(
        files=FILES, source_prefix="summarize: ", source_template="{package}: {document}"
    )
    data = tokenize_splits(load_splits(config), tokenizer, config)
    row = read_rows(TINY_DATA / "train.jsonl")[0]
    text = f"summarize: {row['package']}: {row['document']}"
    assert data.train_input_ids[0].tolist() == tokenizer(text)["input_ids"]


def test_truncation_cuts_to_the_limit_and_keeps_eos(tokenizer):
    config = DataConfig(files=FILES, max_source_length=20, max_target_length=6)
    data = tokenize_splits(load_splits(config), tokenizer, config)
    full = tokenize_splits(load_splits(config), tokenizer, DataConfig(files=FILES))
    long = int((full.train_input_ids.lengths > 20).sum() + (full.eval_input_ids.lengths > 20).sum())
    assert long > 0
    assert data.truncated_sources == long
    assert data.train_input_ids.lengths.max() == 20
    assert data.train_labels.lengths.max() == 6
    assert all(row[-1] == EOS_ID for row in data.train_input_ids)
    assert all(row[-1] == EOS_ID for row in data.train_labels)


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncated_sources_match_the_tokenizers_own_truncation(tmp_path, side):
    tokenizer = tiny_tokenizer(tmp_path)
    tokenizer.truncation_side = side
    config = DataConfig(files=FILES, max_source_length=12)
    data = tokenize_splits(load_splits(config), tokenizer, config)
    documents = [r["document"] for r in read_rows(TINY_DATA / "train.jsonl")]
    expected = tokenizer(documents, truncation=True, max_length=12)["input_ids"]
    assert data.truncated_sources > 100
    assert [row.tolist() for row in data.train_input_ids] == expected
    assert all(row[-1] == EOS_ID for row in expected)


def test_long_sources_are_an_error_without_truncation(tokenizer):
    config = DataConfig(files=FILES, max_source_length=20, truncate=False)
    lengths = tokenize_splits(load_splits(config), tokenizer, DataConfig(files=FILES))
    lengths = lengths.train_input_ids.lengths
    expected = f"{(lengths > 20).sum()} of 200 sources in split 'train' are longer than"
    first = int(np.argmax(lengths > 20))
    with pytest.raises(DataError, match=f"{expected} max_source_length=20 .* row {first} "):
        tokenize_splits(load_splits(config), tokenizer, config)


@pytest.mark.parametrize("truncate", [True, False])
def test_a_split_tokenized_in_chunks_is_the_split_tokenized_whole(tokenizer, monkeypatch, truncate):
    config = DataConfig(files=FILES, max_source_length=20, truncate=truncate)
    whole = DataConfig(files=FILES, max_source_length=20, truncate=True)
    expected = tokenize_splits(load_splits(whole), tokenizer, whole)
    monkeypatch.setattr(tokens_module, "CHUNK_ROWS", 7)  # 29 chunks of the 200 training rows
    if not truncate:  # the error counts the long sources of every chunk, names the first
        full = tokenize_splits(load_splits(config), tokenizer, DataConfig(files=FILES))
        lengths = full.train_input_ids.lengths
        message = f"{(lengths > 20).sum()} of 200 sources .* row {int(np.argmax(lengths > 20))} "
        with pytest.raises(DataError, match=message):
            tokenize_splits(load_splits(config), tokenizer, config)
        return
    chunked = tokenize_splits(load_splits(config), tokenizer, config)
    for name in ("train_input_ids", "train_labels", "eval_input_ids", "eval_labels"):
        ours, theirs = getattr(chunked, name), getattr(expected, name)
        assert np.array_equal(ours.values, theirs.values) and ours.values.dtype == np.int32
        assert np.array_equal(ours.offsets, theirs.offsets)
    assert chunked.truncated_sources == expected.truncated_sources > 0
    assert chunked.eval_references == expected.eval_references


@pytest.mark.parametrize("chars_per_token", [1, 3, 8])
@pytest.mark.parametrize("side", ["right", "left"])
def test_only_the_head_of_a_long_source_is_tokenized_and_the_ids_are_the_same(
    tmp_path, monkeypatch, side, chars_per_token
):
    tokenizer = tiny_tokenizer(tmp_path)
    tokenizer.truncation_side = side
    documents = [r["document"] for r in read_rows(TINY_DATA / "train.jsonl")]
    expected = tokenizer(documents, truncation=True, max_length=13)["input_ids"]
    encoded = []  # every text the tokenizer is given
    real = tokens_module._encode
    monkeypatch.setattr(
        tokens_module,
        "_encode",
        lambda tok, texts, *a: encoded.extend(texts) or real(tok, texts, *a),
    )
    ids, _ = tokens_module._encode_heads(tokenizer, documents, 13, chars_per_token)
    assert ids == expected
    cap = 13 * chars_per_token
    heads = [t for t in encoded if t not in documents]
    assert heads and all(len(t) <= cap for t in heads)
    kept = str.startswith if side == "right" else str.endswith  # the end truncation keeps
    assert all(any(kept(d, t) for d in documents) for t in heads)


def test_heads_that_tokenize_otherwise_than_the_whole_text_are_tokenized_whole(
    tmp_path, monkeypatch
):
    tokenizer = tiny_tokenizer(tmp_path)
    documents = [r["document"] for r in read_rows(TINY_DATA / "train.jsonl")]
    expected = tokenizer(documents, truncation=True, max_length=13)["input_ids"]
    # Cut inside a word: the cut word becomes other tokens, as with a tokenizer whose tokens
    # cross whitespace; the sample check sees it and every cut text is tokenized whole.
    monkeypatch.setattr(tokens_module, "_head", lambda text, chars, _: text[: chars - 1])
    ids, _ = tokens_module._encode_heads(tokenizer, documents, 13, 3)
    assert ids == expected


def test_packed_rows_are_trimmed_and_refuse_a_row_too_wide():
    packer = tokens_module._Packer(rows=4, width=3)
    packer.add([[5, 6, 1], []])
    packer.add([[7, 1], [8]])
    rows = packer.rows()
    assert [r.tolist() for r in rows] == [[5, 6, 1], [], [7, 1], [8]]
    assert rows.offsets.tolist() == [0, 3, 3, 5, 6]
    assert rows.values.shape == (6,) and rows.values.dtype == np.int32
    with pytest.raises(ValueError, match="a row of 4 tokens, more than 3"):
        tokens_module._Packer(rows=1, width=3).add([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="1 of 2 rows were added"):
        short = tokens_module._Packer(rows=2, width=3)
        short.add([[1]])
        short.rows()


def test_token_rows_index_and_pickle():
    rows = TokenRows.from_lists([[5, 6, 1], [], [7, 1]])
    assert len(rows) == 3
    assert [r.tolist() for r in rows] == [[5, 6, 1], [], [7, 1]]
    assert rows[-1].tolist() == [7, 1]
    assert rows.lengths.tolist() == [3, 0, 2]
    with pytest.raises(IndexError):
        rows[3]
    again = pickle.loads(pickle.dumps(rows))
    assert [r.tolist() for r in again] == [[5, 6, 1], [], [7, 1]]


# --- Fit to the model ----------------------------------------------------------------------


def test_source_longer_than_bart_positions_is_an_error():
    model_config = BartConfig(max_position_embeddings=128)
    check_source_length(DataConfig(files=FILES, max_source_length=128), model_config)
    with pytest.raises(DataError, match=r"max_source_length=512 exceeds the 128 positions"):
        check_source_length(DataConfig(files=FILES, max_source_length=512), model_config)


def test_t5_has_no_source_length_limit():
    check_source_length(DataConfig(files=FILES, max_source_length=100_000), T5Config())
