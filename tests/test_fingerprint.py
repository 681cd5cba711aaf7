"""Content keys: the same model gives the same key whoever wrote its files; a change of what
the pseudo-labels depend on gives another, and a miss on shipped labels names the part."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from trainables.config import DecodingConfig
from trainables.fingerprint import combined_key, model_key
from trainables.pseudo import label_key, shipped_mismatch
from trainables.tokens import TokenRows
from trainables.trial import load_base

SOURCES = TokenRows.from_lists([[5, 6, 7, 1], [8, 9, 1]])
DECODING = DecodingConfig(max_new_tokens=8)


def key_of(directory: Path, sources=SOURCES, decoding=DECODING) -> dict[str, str]:
    model, tokenizer = load_base(str(directory))
    return label_key(model_key(model, tokenizer), sources, decoding, 16)


def rewrite_json(path: Path, **changes) -> None:
    content = json.loads(path.read_text())
    path.write_text(json.dumps({**content, **changes}, indent=2))


@pytest.fixture(scope="module")
def original(tiny_t5_path) -> dict[str, str]:
    return key_of(tiny_t5_path)


def test_another_writer_version_and_a_resave_give_the_same_key(tiny_t5_path, tmp_path, original):
    older = Path(shutil.copytree(tiny_t5_path, tmp_path / "older"))
    rewrite_json(older / "config.json", transformers_version="4.0.0", torch_dtype="float32")
    rewrite_json(older / "generation_config.json", transformers_version="4.0.0")
    assert key_of(older) == original

    model, tokenizer = load_base(str(older))
    model.save_pretrained(tmp_path / "resaved")
    tokenizer.save_pretrained(tmp_path / "resaved")
    assert (tmp_path / "resaved" / "config.json").read_bytes() != (
        older / "config.json"
    ).read_bytes()
    assert key_of(tmp_path / "resaved") == original
    assert combined_key(key_of(tmp_path / "resaved")) == combined_key(original)


def test_one_weight_changes_the_weights_part_only(tiny_t5_path, tmp_path, original):
    model, tokenizer = load_base(str(tiny_t5_path))
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1e-3
    model.save_pretrained(tmp_path / "changed")
    tokenizer.save_pretrained(tmp_path / "changed")
    changed = key_of(tmp_path / "changed")
    assert [p for p in original if original[p] != changed[p]] == ["weights"]
    assert combined_key(changed) != combined_key(original)


def test_the_decoding_and_the_sources_are_parts_of_the_key(tiny_t5_path, original):
    beams = key_of(tiny_t5_path, decoding=DecodingConfig(max_new_tokens=8, num_beams=2))
    assert [p for p in original if original[p] != beams[p]] == ["decoding"]
    other = key_of(tiny_t5_path, sources=TokenRows.from_lists([[5, 6, 7, 1], [8, 1]]))
    assert [p for p in original if original[p] != other[p]] == ["sources"]


def test_a_generation_setting_changes_the_generation_part(tiny_t5_path, tmp_path, original):
    changed = Path(shutil.copytree(tiny_t5_path, tmp_path / "ngram"))
    rewrite_json(changed / "generation_config.json", no_repeat_ngram_size=2)
    new = key_of(changed)
    assert [p for p in original if original[p] != new[p]] == ["generation_config"]


def write_shipped(directory: Path, key: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{combined_key(key)}.json"
    path.write_text(json.dumps({"sources": 2, "key": key, "texts": ["a", "b"]}))
    return path


def test_a_near_miss_on_shipped_labels_names_the_parts_that_differ(tmp_path, original):
    path = write_shipped(tmp_path, {**original, "tokenizer": "0" * 64, "sources": "1" * 64})
    message = shipped_mismatch(original, tmp_path)
    assert message is not None
    assert str(path) in message
    assert "another sources, tokenizer;" in message


def test_labels_for_another_model_and_data_or_decoding_are_no_near_miss(tmp_path, original):
    write_shipped(tmp_path, {**original, "weights": "0" * 64, "sources": "1" * 64})
    write_shipped(tmp_path, {**original, "decoding": "2" * 64})
    (tmp_path / "not-a-key.json").write_text("[1, 2]")
    assert shipped_mismatch(original, tmp_path) is None
