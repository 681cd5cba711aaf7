"""`shrink-sweep export`: the picking rules on a made-up front, int8 and the generation-cache
fix on tiny models, and the round trip on a tiny sweep recorded in MLflow.

The default suite records its sweep through `Tracker` with real trials (`run_trial`) instead of
Ray, which takes a minute to start; the slow test runs the real `shrink-sweep run` first.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from importlib import resources
from importlib.metadata import version as version_of
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import transformers
import yaml
from mlflow.tracking import MlflowClient
from packaging.version import Version
from test_sweep import write_space as write_tiny_space
from tiny import TINY_DATA, TINY_FILES, tiny_bart_dir, tiny_space, tiny_t5_dir
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
)

from search import cli
from search.driver.preflight import prepare
from search.export.errors import ExportError
from search.export.int8 import INT8_DIR, INT8_WEIGHTS, load_int8, quantize_int8, save_int8
from search.export.model_dir import PIPELINE_FILE
from search.export.pick import pick_trial
from search.export.ship import eval_data, held_out_data
from search.front.pareto import knee
from search.record.store import default_uri
from search.record.tracker import Tracker
from search.space.config import load_config
from search.space.suggest import plan
from trainables.scoring import evaluate_model
from trainables.shrink import size_cache_by_decoder
from trainables.trial import run_trial, size_on_disk_mb

OBJECTIVES = [("rougeL", "max"), ("params", "min")]
# A made-up sweep: t1..t4 form the front, t5 is dominated by t2.
FRONT = [
    {"trial": "t1", "rougeL": 40.0, "params": 100.0},
    {"trial": "t2", "rougeL": 38.0, "params": 50.0},
    {"trial": "t3", "rougeL": 30.0, "params": 30.0},
    {"trial": "t4", "rougeL": 10.0, "params": 10.0},
    {"trial": "t5", "rougeL": 35.0, "params": 80.0},
]
REPO = Path(__file__).resolve().parents[1]
SOURCE = "libfoo: libfoo is a small library for reading and writing PNG images."


# --- picking (pure) ------------------------------------------------------------------------


def test_default_pick_is_the_knee():
    # Rescaled over the front: t1 1+0, t2 0.93+0.56, t3 0.67+0.78, t4 0+1; t2 has the most.
    pick = pick_trial(FRONT, OBJECTIVES)
    assert pick.trial == "t2"
    assert "knee" in pick.reason and "4 trials on it" in pick.reason


def test_a_front_of_one_is_said_so():
    assert pick_trial(FRONT[:1], OBJECTIVES).reason.startswith("the only trial on the Pareto")


def test_knee_with_objectives_in_other_order_and_units():
    rows = [{**r, "params": int(r["params"])} for r in FRONT]
    assert pick_trial(rows, [("params", "min"), ("rougeL", "max")]).trial == "t2"


@pytest.mark.parametrize(
    ("max_params", "expected"), [(100, "t1"), (99, "t2"), (50, "t2"), (49, "t3"), (10, "t4")]
)
def test_max_params_takes_the_best_rouge_within_the_budget(max_params, expected):
    pick = pick_trial(FRONT, OBJECTIVES, max_params=max_params)
    assert pick.trial == expected
    assert f"at most {max_params:,}" in pick.reason


@pytest.mark.parametrize(
    ("min_rouge", "expected"), [(40, "t1"), (38.5, "t1"), (35, "t2"), (30, "t3"), (0, "t4")]
)
def test_min_rouge_takes_the_smallest_model_that_keeps_it(min_rouge, expected):
    pick = pick_trial(FRONT, OBJECTIVES, min_rouge=min_rouge)
    assert pick.trial == expected
    assert "smallest model" in pick.reason


def test_rule_ties_break_toward_the_other_objective():
    rows = [*FRONT, {"trial": "t6", "rougeL": 38.0, "params": 45.0}]
    assert pick_trial(rows, OBJECTIVES, max_params=60).trial == "t6"  # same ROUGE, fewer params
    rows = [*FRONT, {"trial": "t7", "rougeL": 39.0, "params": 50.0}]
    assert pick_trial(rows, OBJECTIVES, min_rouge=35).trial == "t7"  # same size, more ROUGE


def test_trial_by_id_even_off_the_front():
    assert pick_trial(FRONT, OBJECTIVES, trial="t5").trial == "t5"


@pytest.mark.parametrize(
    ("rows", "rule", "message"),
    [
        ([], {}, "no finished trial"),
        (FRONT, {"trial": "t9"}, "no finished trial 't9' in this sweep (finished: t1, t2"),
        (FRONT, {"max_params": 5}, "no trial has at most 5 parameters (the smallest has 10)"),
        (FRONT, {"min_rouge": 41}, "no trial reaches ROUGE-L 41 (the best has 40.00)"),
        (FRONT, {"trial": "t1", "min_rouge": 1}, "at most one of"),
        ([{"trial": "x", "rougeL": 1.0}], {}, "reports every objective"),
    ],
)
def test_picking_errors_name_the_problem(rows, rule, message):
    with pytest.raises(ExportError) as caught:
        pick_trial(rows, OBJECTIVES, **rule)
    assert message in str(caught.value)


# --- int8, on tiny models -----------------------------------------


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_int8_reloads_smaller_and_close_to_fp32(tmp_path, family):
    make = tiny_t5_dir if family == "t5" else tiny_bart_dir
    path = make(tmp_path, layers=(2, 3))
    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    size_cache_by_decoder(model.config)
    model.save_pretrained(path)
    inputs = AutoTokenizer.from_pretrained(path)(
        [SOURCE, "short"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        fp32 = model(**inputs, decoder_input_ids=torch.zeros(2, 3, dtype=torch.long)).logits
    quantized = quantize_int8(model)
    save_int8(quantized, path / INT8_DIR)
    reloaded = load_int8(path)

    state = torch.load(path / INT8_DIR / INT8_WEIGHTS, weights_only=False)
    # The tied token table is stored once, as the LM head's int8 weights.
    assert not [k for k in state if "shared" in k or "embed_tokens" in k]
    assert (path / INT8_DIR / INT8_WEIGHTS).stat().st_size < size_on_disk_mb(path) * 1e6
    decoder_input_ids = torch.zeros(2, 3, dtype=torch.long)
    with torch.no_grad():
        int8 = reloaded(**inputs, decoder_input_ids=decoder_input_ids).logits
        again = quantized(**inputs, decoder_input_ids=decoder_input_ids).logits
        assert torch.equal(int8, again)  # what was saved is what was quantized
        assert (int8 - fp32).abs().max() < 0.1 * fp32.abs().max()
        generated = reloaded.generate(**inputs, max_new_tokens=6)
        # A used model (its tied table unpacked) that loads new weights looks rows up anew.
        used = quantize_int8(AutoModelForSeq2SeqLM.from_config(model.config).eval())
        used(**inputs, decoder_input_ids=decoder_input_ids)
        used.load_state_dict(state)
        assert torch.equal(used(**inputs, decoder_input_ids=decoder_input_ids).logits, int8)
    assert generated.shape[0] == 2


def test_int8_quantizes_untied_and_scaled_embeddings(tmp_path):
    # T5 configs in transformers 5 always tie the LM head; a BART config can untie it.
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
        decoder_ffn_dim=37, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
        tie_word_embeddings=False, scale_embedding=True,  # embeddings x sqrt(d_model)
    )  # fmt: skip
    model = BartForConditionalGeneration(config).eval()
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    model.save_pretrained(tmp_path)
    input_ids = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(0))
    decoder_input_ids = torch.zeros(2, 3, dtype=torch.long)
    with torch.no_grad():
        fp32 = model(input_ids=input_ids, decoder_input_ids=decoder_input_ids).logits
        save_int8(quantize_int8(model), tmp_path / INT8_DIR)
        int8 = load_int8(tmp_path)(input_ids=input_ids, decoder_input_ids=decoder_input_ids)
    state = torch.load(tmp_path / INT8_DIR / INT8_WEIGHTS, weights_only=False)
    tables = {k: v for k, v in state.items() if k.endswith("weight_int8")}
    assert set(tables) == {f"model.{m}.weight_int8" for m in ("shared", "encoder.embed_tokens",
                                                               "decoder.embed_tokens")}  # fmt: skip
    assert not [k for k in state if k.endswith("embed_tokens.weight")]  # no fp32 table left
    assert "model.encoder.embed_positions.weight" in state  # position tables stay fp32
    assert (int8.logits - fp32).abs().max() < 0.1 * fp32.abs().max()


def test_shipped_pipeline_is_a_module_that_imports_only_transformers():
    # It runs inside the export directory through trust_remote_code, where only transformers is.
    source = resources.files("search.export").joinpath(PIPELINE_FILE).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or "").split(".")[0])
    assert imported == {"transformers"}
    from search.export.summarization_pipeline import SummarizationPipeline

    assert issubclass(SummarizationPipeline, transformers.Pipeline)


# --- the round trip on a tiny sweep --------------------------------------------------------


def write_space(directory: Path, model: Path, name: str = "tiny") -> Path:
    data = tiny_space(model)["data"]
    data["files"] = {**TINY_FILES, "test": str(TINY_DATA / "test.jsonl")}  # only export reads it
    return write_tiny_space(
        directory,
        model,
        name=name,
        data=data,
        layers={"encoder": {"low": 1, "high": 4}, "decoder": {"low": 1, "high": 3}},
        train={"learning_rate": 1.0e-2, "max_steps": 80, "batch_size": 8},
        decoding={"max_new_tokens": 12, "no_repeat_ngram_size": 3},
        first=[],
    )


def record_trial(tracker: Tracker, trial: str, params: dict, metrics: dict, checkpoint: Path):
    """What the sweep's Tune callback records for a finished trial."""
    run_id = tracker.trials.start(trial, params, {})
    tracker.trials.log_metrics(run_id, metrics, step=int(metrics.get("step", 0)))
    tracker.trials.set_tags(run_id, {"checkpoint": str(checkpoint)})
    tracker.trials.end(run_id, "finished")


def train_trial(tracker, config, prepared, trial: str, layers: tuple[int, int], store: Path):
    values = {"strategy": "sft", "encoder": layers[0], "decoder": layers[1]}
    trial_config = plan({**values, **_fixed_train(config)}, prepared.parent_layers)
    checkpoint = store / "ray" / "tiny-sweep" / "weights" / trial  # where a sweep keeps them
    result = run_trial(
        trial_config, prepared.base, prepared.data, config.decoding, save_dir=checkpoint, threads=1
    )
    params = {
        **values,
        **asdict(trial_config.train),
        "encoder_layers": trial_config.encoder_layers,
        "decoder_layers": trial_config.decoder_layers,
    }
    record_trial(tracker, trial, params, result.metrics, checkpoint)
    return params, result.metrics, checkpoint


def _fixed_train(config) -> dict:
    return {k: v.value for k, v in vars(config.train).items()}


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> dict:
    """A tiny T5 sweep with two trained trials, both with more decoder than encoder layers,
    three small broken sweeps in their own experiments, and one more with trial a alone, for
    exports that must not touch the first sweep's record."""
    root = tmp_path_factory.mktemp("export")
    base = tiny_t5_dir(root / "t5", layers=(4, 3))
    space = write_space(root, base)
    config = load_config(space)
    prepared = prepare(config)
    store = root / "mlflow"
    tracker = Tracker(default_uri(store), config.name, store / "artifacts")
    parents = {"parent_encoder_layers": 4, "parent_decoder_layers": 3}
    tracker.start_sweep("tiny-sweep", parents, {"base_model": str(base)})
    trials = {t: train_trial(tracker, config, prepared, t, layers, store) for t, layers in
              {"a": (1, 3), "b": (2, 3)}.items()}  # fmt: skip
    tracker.end_sweep("finished")
    params, metrics, checkpoint = trials["a"]
    broken = {
        "tiny-empty": [],
        "tiny-gone": [("gone", params, metrics, root / "deleted")],
        "tiny-tampered": [("tampered", params, {**metrics, "rougeL": 99.0}, checkpoint)],
        "tiny-alone": [("a", params, metrics, checkpoint)],
    }
    for name, records in broken.items():
        other = Tracker(default_uri(store), name, store / "artifacts")
        other.start_sweep(f"{name}-sweep", parents, {"base_model": str(base)})
        for record in records:
            record_trial(other, *record)
    return {"root": root, "space": space, "store": store, "trials": trials}


def export(sweep: dict, *args: str) -> tuple[int, str, str]:
    """Run `shrink-sweep export` in this process; return the exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["export", "--space", str(sweep["space"]), "--store", str(sweep["store"]), *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


TEST_EXAMPLES = 10  # of the tiny test split's 30 pairs


@pytest.fixture(scope="session")
def exported(sweep) -> dict:
    """The knee exported by the command a user types, so that its stderr is all it printed."""
    directory = sweep["root"] / "shipped" / "model"
    argv = ["export", "--space", str(sweep["space"]), "--store", str(sweep["store"])]
    argv += ["--out", str(directory), "--test-examples", str(TEST_EXAMPLES)]
    done = subprocess.run(
        [sys.executable, "-m", "search.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    rows = [{"trial": t, **m} for t, (_, m, _) in sweep["trials"].items()]
    knee_trial = rows[knee([[r["rougeL"], r["params"]] for r in rows], ["max", "min"])]["trial"]
    return {"dir": directory, "stdout": done.stdout, "stderr": done.stderr, "trial": knee_trial}


def test_export_prints_no_warnings(exported):
    assert exported["stderr"] == ""


def test_export_writes_a_complete_directory(exported):
    directory = exported["dir"]
    for name in ("model.safetensors", "config.json", "generation_config.json", "README.md",
                 "tokenizer.json", "summarization_pipeline.py", "int8/model.pt"):  # fmt: skip
        assert (directory / name).is_file(), name
    generation = json.loads((directory / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 12 and generation["no_repeat_ngram_size"] == 3
    assert generation["num_beams"] == 1 and not generation.get("do_sample")
    config = json.loads((directory / "config.json").read_text())
    assert config["decoder_layers"] == 3 and config["num_layers"] < 3  # the deeper decoder
    assert "summarization" in config["custom_pipelines"]
    shipped = resources.files("search.export").joinpath(PIPELINE_FILE).read_bytes()
    assert (directory / PIPELINE_FILE).read_bytes() == shipped
    assert os.listdir(directory.parent) == ["model"]  # no partial directory left behind
    assert f"exporting trial {exported['trial']}: the " in exported["stdout"]
    umask = os.umask(0)
    os.umask(umask)
    assert (directory / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_card_tells_scores_layers_and_front(exported, sweep):
    card = (exported["dir"] / "README.md").read_text()
    params, _, _ = sweep["trials"][exported["trial"]]
    kept = "[" + ",".join(str(i) for i in params["decoder_layers"]) + "]"
    assert f"decoder layers kept: {kept} of 3" in card
    assert "| ROUGE-L |" in card and "| weights on disk (MB) |" in card
    assert "## Pareto front" in card and f"**{exported['trial']}**" in card
    assert f"learning_rate | {params['learning_rate']}" in card


def report_rows(stdout: str) -> dict[str, list[str]]:
    """The printed score table's rows (the header, fp32, int8) by their first cell."""
    rows = [line.split() for line in stdout.splitlines()]
    (start,) = [i for i, row in enumerate(rows) if row[:1] == ["ROUGE-L"]]
    return {row[0]: row for row in rows[start : start + 3]}


def test_test_split_scores_are_printed_recorded_and_in_the_card(exported, sweep):
    out = exported["stdout"]
    pairs = f"{TEST_EXAMPLES} pairs of the 'test' split (held out)"
    assert f"scoring fp32 on {pairs}" in out and f"scoring int8 on {pairs}" in out
    assert f"  test: {TEST_EXAMPLES} held-out pairs, which no trial saw" in out
    rows = report_rows(out)
    assert rows["ROUGE-L"] == ["ROUGE-L", "validation", "test", "MB", "ms/example"]

    client = MlflowClient(default_uri(sweep["store"]))
    version = client.get_model_version_by_alias("tiny-summarizer", "best-tradeoff")
    tags = version.tags
    assert (tags["test_split"], tags["test_examples"]) == ("test", str(TEST_EXAMPLES))
    assert rows["fp32"][1:3] == [tags["rougeL"], tags["test_rougeL"]]
    assert rows["int8"][1:3] == [tags["rougeL_int8"], tags["test_rougeL_int8"]]
    assert all(0 <= float(tags[k]) <= 100 for k in ("test_rougeL", "test_rougeL_int8"))
    on_test = f"{tags['test_rougeL']} (int8 {tags['test_rougeL_int8']}) on {TEST_EXAMPLES} pairs"
    assert f"{on_test} of the held-out 'test' split" in version.description

    card = (exported["dir"] / "README.md").read_text()
    assert "| | fp32 `validation` | fp32 `test` | int8 `validation` | int8 `test` |" in card
    assert f"| examples | 12 | {TEST_EXAMPLES} | 12 | {TEST_EXAMPLES} |" in card  # 12: the space
    scores = [tags[k] for k in ("rougeL", "test_rougeL", "rougeL_int8", "test_rougeL_int8")]
    assert f"| ROUGE-L | {' | '.join(scores)} |" in card
    assert f"{TEST_EXAMPLES} examples of the `test` split" in card


def test_test_scores_are_those_of_the_shipped_fp32_and_int8_models(exported, sweep):
    # Scored again here from the directory: fp32 must not be scored after quantizing (which
    # works in place), nor int8 on fp32 weights.
    config = load_config(sweep["space"])
    directory = exported["dir"]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    test = held_out_data(config, tokenizer, "test", TEST_EXAMPLES)
    fp32 = AutoModelForSeq2SeqLM.from_pretrained(directory)
    tags = (
        MlflowClient(default_uri(sweep["store"]))
        .get_model_version_by_alias("tiny-summarizer", "best-tradeoff")
        .tags
    )
    for model, key in ((fp32, "test_rougeL"), (load_int8(directory), "test_rougeL_int8")):
        scores = evaluate_model(model, tokenizer, test, config.decoding)
        assert f"{scores['rougeL']:.2f}" == tags[key], key


def test_held_out_data_is_tokenized_as_the_evaluation_data(sweep):
    config = load_config(sweep["space"])
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    evaluation = eval_data(config, tokenizer)
    # The evaluation split taken the held-out way: the very pairs, token for token.
    same = held_out_data(config, tokenizer, "validation", config.data.max_eval_examples)
    assert same.eval_references == evaluation.eval_references
    assert [list(r) for r in same.eval_input_ids] == [list(r) for r in evaluation.eval_input_ids]
    assert [list(r) for r in same.eval_labels] == [list(r) for r in evaluation.eval_labels]
    lines = (TINY_DATA / "test.jsonl").read_text().splitlines()
    summaries = [json.loads(line)["summary"] for line in lines]
    assert held_out_data(config, tokenizer, "test", None).eval_references == tuple(summaries)
    sample = held_out_data(config, tokenizer, "test", 7).eval_references
    assert len(sample) == 7 and set(sample) <= set(summaries)


def test_data_without_the_test_split_is_exported_and_says_so(sweep, tmp_path):
    code, out, err = export(
        sweep, "--set", "name=tiny-alone", "--out", str(tmp_path / "m"), "--test-split", "nope"
    )
    assert code == 0, err + out
    missing = "split 'nope' not found (available: test, train, validation)"
    assert [line for line in out.splitlines() if "not found" in line] == [
        f"  nope: not scored, {missing}"
    ]
    rows = report_rows(out)
    assert rows["ROUGE-L"][2] == "nope" and rows["fp32"][2] == rows["int8"][2] == "-"
    assert (
        f"Not scored on a held-out split: {missing}." in (tmp_path / "m" / "README.md").read_text()
    )
    version = MlflowClient(default_uri(sweep["store"])).get_model_version(
        "tiny-alone-summarizer", "1"
    )
    assert version.tags["test_split"] == f"not scored: {missing}"
    assert "test_rougeL" not in version.tags


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_test_examples_must_be_a_positive_count(value, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["export", "--test-examples", value])
    assert caught.value.code == cli.BAD_INPUT
    assert "--test-examples" in capsys.readouterr().err


def test_pipeline_loads_and_summarizes_offline(exported, tmp_path):
    code = f"""
import json, torch
torch.set_num_threads(1)
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline
directory = {str(exported["dir"])!r}
summary = pipeline("summarization", model=directory, trust_remote_code=True)({SOURCE!r})
model = AutoModelForSeq2SeqLM.from_pretrained(directory)
tokenizer = AutoTokenizer.from_pretrained(directory)
direct = tokenizer.decode(model.generate(**tokenizer({SOURCE!r}, return_tensors="pt"))[0],
                          skip_special_tokens=True).strip()
print(json.dumps({{"pipeline": summary, "direct": direct}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["pipeline"] == [{"summary_text": answer["direct"]}]
    assert answer["direct"]  # the trained student says something


def test_int8_variant_reloads_generates_and_is_smaller(exported):
    directory = exported["dir"]
    model = load_int8(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        output = model.generate(**tokenizer([SOURCE], return_tensors="pt"))
    assert output.shape[1] > 1
    assert (directory / INT8_DIR / INT8_WEIGHTS).stat().st_size < size_on_disk_mb(directory) * 1e6
    assert "int8 weights are" in exported["stdout"] and "drop" in exported["stdout"]


def test_card_loads_int8_without_the_exporter(exported):
    # The card's int8 snippet, run as a user would beside the directory: it needs the int8
    # module alone, not the exporter (picking, card, MLflow).
    card = (exported["dir"] / "README.md").read_text()
    snippet = card.split("```python\n")[2].split("```")[0]
    assert "from search.export.int8 import load_int8" in snippet
    code = f"""{snippet}
import json, sys, torch
with torch.no_grad():
    output = model.generate(**tokenizer([{SOURCE!r}], return_tensors="pt"), max_new_tokens=4)
print(json.dumps({{"length": output.shape[1], "modules": sorted(sys.modules)}}))
"""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=exported["dir"].parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["length"] > 1
    exporter = ["search.export." + m for m in ("ship", "pick", "card", "model_dir", "staging")]
    assert not set(answer["modules"]) & {*exporter, "search.record", "mlflow", "ray"}
    assert "search.export.int8" in answer["modules"]


def test_mlflow_registers_the_version_with_its_alias(exported, sweep):
    client = MlflowClient(default_uri(sweep["store"]))
    version = client.get_model_version_by_alias("tiny-summarizer", "best-tradeoff")
    assert version.tags["trial"] == exported["trial"]
    _, metrics, _ = sweep["trials"][exported["trial"]]
    assert abs(float(version.tags["rougeL"]) - metrics["rougeL"]) <= 0.5  # re-scored fp32
    parent = client.get_run(version.run_id)
    assert parent.data.tags["shrink_sweep.kind"] == "sweep"
    assert parent.data.tags["shrink_sweep.exported"].startswith("tiny-summarizer v")
    # The version is an MLflow model logged from the sweep's run, in the sweep's experiment,
    # holding the export directory whole.
    assert version.source.startswith("models:/m-")
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert (model.name, model.status.name) == (f"trial_{exported['trial']}", "READY")
    assert model.source_run_id == parent.info.run_id
    assert model.experiment_id == parent.info.experiment_id
    assert model.model_id in {o.model_id for o in parent.outputs.model_outputs}
    stored = Path(model.artifact_location.removeprefix("file://"))
    assert {"MLmodel", "mlflow_model.py", "requirements.txt", "input_example.json"} <= {
        p.name for p in stored.iterdir()
    }
    pyfunc = yaml.safe_load((stored / "MLmodel").read_text())["flavors"]["python_function"]
    model_dir = stored / pyfunc["artifacts"]["model_dir"]["path"]
    for name in ("README.md", "model.safetensors", "int8/model.pt", PIPELINE_FILE):
        assert (model_dir / name).read_bytes() == (exported["dir"] / name).read_bytes(), name
    requirements = (stored / "requirements.txt").read_text().split()
    assert requirements == [
        f"{p}=={Version(version_of(p)).public}" for p in ("mlflow", "transformers", "torch")
    ]


def load_alias(store: Path, name: str = "tiny-summarizer", alias: str = "best-tradeoff") -> Any:
    """`mlflow.pyfunc.load_model("models:/NAME@ALIAS")` against the store, as a user would."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(default_uri(store))
    try:
        return mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    finally:
        mlflow.set_tracking_uri(previous)


def test_the_registered_version_loads_as_a_pyfunc_and_summarizes(exported, sweep, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_alias(sweep["store"])
    inputs = model.metadata.signature.inputs.to_dict()
    outputs = model.metadata.signature.outputs.to_dict()
    assert inputs == outputs == [{"type": "string", "required": True}]
    texts = [SOURCE, "libbar: a command-line tool to convert audio files."]
    summaries = model.predict(texts)
    assert all(isinstance(s, str) and s for s in summaries)
    # What the shipped directory's own pipeline says: the MLflow model adds nothing.
    summarize = transformers.pipeline(
        "summarization", model=str(exported["dir"]), trust_remote_code=True
    )
    assert summaries == [r["summary_text"] for r in summarize(texts)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trial", "nope"], "no finished trial 'nope' in this sweep (finished: a, b)"),
        (["--set", "name=tiny-empty"], "the sweep has no finished trial yet"),
        (["--set", "name=tiny-gone"], "trial gone's weights were not kept"),
        (["--max-params", "10"], "no trial has at most 10 parameters"),
        (["no-such-sweep"], "no sweep no-such-sweep in experiment 'tiny'"),
    ],
)
def test_bad_requests_exit_2_with_the_reason(sweep, args, message):
    code, _, err = export(sweep, "--out", str(sweep["root"] / "never"), *args)
    assert code == cli.BAD_INPUT
    assert message in err
    assert not (sweep["root"] / "never").exists()


def test_existing_directory_needs_force(sweep, tmp_path):
    (tmp_path / "taken").mkdir()
    code, _, err = export(sweep, "--out", str(tmp_path / "taken"))
    assert code == cli.BAD_INPUT
    assert "taken exists; pass --force" in err


def test_a_model_that_does_not_score_as_recorded_is_not_written(sweep, tmp_path):
    code, _, err = export(sweep, "--set", "name=tiny-tampered", "--out", str(tmp_path / "m"))
    assert code == cli.BAD_INPUT
    assert "the sweep recorded 99.00" in err and "nothing was written" in err
    assert os.listdir(tmp_path) == []  # neither the directory nor a partial one


@pytest.mark.slow
def test_mlflow_serves_the_registered_version(exported, sweep, tmp_path):
    # `mlflow models serve` in this environment, as the README says, on a free local port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = "models:/tiny-summarizer@best-tradeoff"
    env = {**os.environ, "MLFLOW_TRACKING_URI": default_uri(sweep["store"]), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local",
               "-m", model, "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            _wait_for(f"{url}/ping", server, log)
            texts = [SOURCE, "libbar: a command-line tool to convert audio files."]
            request = urllib.request.Request(
                f"{url}/invocations",
                data=json.dumps({"inputs": texts}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as reply:
                answer = json.loads(reply.read())
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)  # the uvicorn worker too
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    summarize = transformers.pipeline(
        "summarization", model=str(exported["dir"]), trust_remote_code=True
    )
    assert answer == {"predictions": [r["summary_text"] for r in summarize(texts)]}
    assert all(answer["predictions"])


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited {server.returncode}:\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=10) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(1)
    pytest.fail(f"the server did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


# --- end to end through Ray ----------------------------------------------------------------


@pytest.mark.slow
def test_run_then_export_twice_through_the_cli(tmp_path):
    base = tiny_t5_dir(tmp_path / "t5", layers=(4, 3))
    space = yaml.safe_load(write_space(tmp_path, base).read_text())
    space["first"] = [{"encoder": 1, "decoder": 3, "strategy": "sft"}]
    space["keep_weights"] = "all"  # so that the deeper-decoder trial can be exported
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))

    def shrink_sweep(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "search.cli", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )

    done = shrink_sweep("run")
    assert done.returncode == 0, done.stderr[-3000:]
    done = shrink_sweep("export")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exporting trial" in done.stdout and "the Pareto front" in done.stdout
    (shipped,) = (tmp_path / "exported").iterdir()
    assert (shipped / "int8" / INT8_WEIGHTS).is_file()

    client = MlflowClient(default_uri(tmp_path / "mlflow"))
    deep = [
        r.data.tags["shrink_sweep.trial_id"]
        for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
        if (r.data.params.get("encoder"), r.data.params.get("decoder")) == ("1", "3")
    ]
    out = tmp_path / "deep"
    done = shrink_sweep("export", "--trial", deep[0], "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    again = shrink_sweep("export", "--trial", deep[0], "--out", str(out), "--force")
    assert again.returncode == 0, again.stderr[-3000:]
    versions = client.search_model_versions("name = 'tiny-summarizer'")
    assert len(versions) == 3
    alias = client.get_model_version_by_alias("tiny-summarizer", "best-tradeoff")
    assert int(alias.version) == max(int(v.version) for v in versions)
    (summary,) = load_alias(tmp_path / "mlflow").predict([SOURCE])  # the deep trial, by alias
    assert isinstance(summary, str) and summary
