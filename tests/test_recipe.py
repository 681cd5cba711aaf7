"""`train.targets: auto` (`search.strategy.recipe`): the teacher's own summaries against a short
gold fine-tune of the full model; pseudo-labels where the teacher knows the data, gold where
it does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from tiny import TINY_FILES, tiny_space

from search.driver.preflight import prepare
from search.space.config import ConfigError, config_from_dict
from search.strategy.recipe import MARGIN, choose_targets, probe_steps
from trainables.config import TrainConfig
from trainables.train import fine_tune
from trainables.trial import load_base

TEACHER_STEPS = 800  # a tiny T5 learns the tiny data's summaries (or names) to the end


def test_gold_wins_only_by_more_than_the_margin():
    assert choose_targets(30.0, 30.0 + MARGIN + 0.01, 56).targets == "gold"
    assert choose_targets(30.0, 30.0 + MARGIN, 56).targets == "pseudo"
    assert choose_targets(30.0, 25.0, 56).targets == "pseudo"
    reason = choose_targets(20.0, 28.5, 56).reason()
    assert reason.startswith("gold: ") and "20.00" in reason and "28.50" in reason
    assert "56 steps" in reason
    assert (probe_steps(500), probe_steps(30), probe_steps(1)) == (56, 4, 1)


def test_auto_is_the_whole_sweep_s_choice_never_searched(tiny_t5_path):
    space = tiny_space(tiny_t5_path)
    space["train"]["targets"] = "auto"
    assert config_from_dict(space).train.targets.value == "auto"
    space["train"]["targets"] = ["auto", "gold"]
    with pytest.raises(ConfigError, match=r"train\.targets: auto chooses for the whole sweep"):
        config_from_dict(space)


def trained_teacher(tiny_t5_path, tmp_path, summary_column: str):
    """The tiny T5 trained on every pair of the tiny data, the evaluation ones too, with
    `summary_column` as the summary (the summaries: a teacher that knows this data as well
    as a teacher can; the package names: another task), saved as a local pretrained model."""
    everything = tmp_path / "everything.jsonl"
    everything.write_text("".join(Path(f).read_text() for f in TINY_FILES.values()))
    space = tiny_space(tiny_t5_path)
    space["data"].update(files={"train": str(everything), "validation": TINY_FILES["validation"]})
    space["data"]["summary_column"] = summary_column
    space["train"]["targets"] = "gold"
    data = prepare(config_from_dict(space)).data
    model, tokenizer = load_base(str(tiny_t5_path))
    train = TrainConfig(learning_rate=1e-2, max_steps=TEACHER_STEPS, batch_size=16)
    fine_tune(model, data, train, pad_token_id=tokenizer.pad_token_id, threads=1)
    directory = tmp_path / f"teacher-{summary_column}"
    shutil.copytree(tiny_t5_path, directory)
    model.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(("taught", "chosen"), [("summary", "pseudo"), ("package", "gold")])
def test_auto_picks_pseudo_for_a_teacher_of_this_data_and_gold_for_another(
    tiny_t5_path, tmp_path, taught, chosen
):
    """A teacher trained on the tiny data's summaries summarizes it well: its summaries are the
    targets. One trained to name the packages (another task) scores badly on the summaries,
    and a short fine-tune on them beats it: gold, and no pseudo-label is made."""
    teacher = trained_teacher(tiny_t5_path, tmp_path, taught)
    space = tiny_space(teacher)
    space["train"] = {"learning_rate": 1e-2, "max_steps": 900, "batch_size": 16, "targets": "auto"}
    space["data"]["pseudo_examples"] = 40
    space["data"]["max_eval_examples"] = 30
    prepared = prepare(config_from_dict(space), pseudo_label_cache=tmp_path / "labels")

    recipe, score = prepared.recipe, prepared.teacher
    assert recipe is not None and score is not None
    assert recipe.targets == chosen, recipe.reason()
    assert recipe.probe_steps == 100 and recipe.teacher_rougeL == score.rouge["rougeL"]
    assert score.pairs == 30 and score.reference_words == pytest.approx(6.0, abs=1.5)
    if chosen == "gold":
        assert recipe.gold_rougeL > recipe.teacher_rougeL + MARGIN
        assert prepared.data.pseudo_labels is None and not (tmp_path / "labels").exists()
        assert score.words < 3  # package names, not summaries
    else:
        assert score.rouge["rougeL"] > 30  # an untrained tiny T5 scores about 0
        assert len(prepared.data.pseudo_labels) == 40
        assert prepared.pseudo_labels == "generated in this process"


@pytest.mark.slow
def test_a_sweep_keeps_what_auto_chose_when_it_is_extended(tmp_path, tiny_t5_path):
    """The choice is made once, printed, tagged and written into the sweep's stored space.yaml:
    an extension (or a resume) trains as the sweep began, without choosing again."""
    from test_sweep import shrink_sweep, sweep_runs, write_space

    train = {"learning_rate": 1e-2, "max_steps": 9, "batch_size": 8, "targets": "auto"}
    data = {**tiny_space(tiny_t5_path)["data"], "pseudo_examples": 16}
    space = write_space(tmp_path, tiny_t5_path, trials=1, train=train, data=data)
    done = shrink_sweep("run", str(space), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "targets: auto; fine-tuning the full model 1 steps on the gold summaries" in done.stdout
    client, parent, _ = sweep_runs(tmp_path / "mlflow")
    chosen = parent.data.tags["shrink_sweep.targets"]
    targets = chosen.split(":")[0]
    assert targets in ("gold", "pseudo") and f"targets: {chosen}" in done.stdout
    stored = client.download_artifacts(parent.info.run_id, "space.yaml", str(tmp_path))
    assert yaml.safe_load(Path(stored).read_text())["train"]["targets"] == targets

    more = shrink_sweep("run", "--resume", "--trials", "2", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "targets: auto" not in more.stdout and "teacher (the base model" not in more.stdout
    _, _, children = sweep_runs(tmp_path / "mlflow")
    assert [c.data.params["targets"] for c in children] == [targets, targets]
