"""A trial's weights as bytes and back: what the driver's receiver writes (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.driver.weights import WeightsReceiver
from trainables.trial import PackedModel


def files_under(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def model_dir(directory: Path, weights: bytes, extra: str | None = None) -> Path:
    (directory / "nested").mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "t5"}')
    (directory / "model.safetensors").write_bytes(weights)
    (directory / "nested" / "tokenizer.json").write_text("{}")
    if extra:
        (directory / extra).write_text("only in this copy")
    return directory


def test_weights_arrive_byte_for_byte_and_a_rerun_replaces_them_whole(tmp_path):
    receiver = WeightsReceiver(str(tmp_path / "weights"))
    first = model_dir(tmp_path / "first", bytes(range(256)) * 3, extra="stale.txt")
    saved = Path(receiver.save("abc_00001", PackedModel.from_directory("abc_00001", first)))

    assert saved == tmp_path / "weights" / "abc_00001"
    assert files_under(saved) == files_under(first)
    assert set(files_under(saved)) == {
        "config.json",
        "model.safetensors",
        "nested/tokenizer.json",
        "stale.txt",
    }

    second = model_dir(tmp_path / "second", b"\x00\xff" * 100)
    again = receiver.save("abc_00001", PackedModel.from_directory("abc_00001", second))
    assert Path(again) == saved
    assert files_under(saved) == files_under(second)  # stale.txt of the first copy is gone
    assert [p.name for p in (tmp_path / "weights").iterdir()] == ["abc_00001"]  # no partial


@pytest.mark.parametrize("trial_id", ["", "..", "../escape", "a/b", ".hidden"])
def test_only_a_plain_trial_id_names_a_directory(tmp_path, trial_id):
    packed = PackedModel.from_directory("x", model_dir(tmp_path / "m", b"w"))
    with pytest.raises(ValueError, match="not a trial id"):
        WeightsReceiver(str(tmp_path / "weights")).save(trial_id, packed)
    assert not (tmp_path / "weights").exists()
