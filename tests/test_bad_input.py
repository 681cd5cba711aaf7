"""Bad input is refused before any work: one message naming the problem and its place, exit
code 2, and nothing in the tracking store (issue 5, "Bad input").

Each case changes one thing in a space that passes every check (`test_the_base_space_passes`)
and runs `shrink-sweep run` in-process; a few run as a real subprocess to prove the exit code.
The Hub is never contacted: offline mode everywhere, and a mocked "not found" where a case is
about a Hub name.
"""

from __future__ import annotations

import copy
import http.server
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import huggingface_hub
import pytest
import ray
import yaml
from huggingface_hub.errors import RepositoryNotFoundError
from tiny import TINY_DATA, tiny_bart_dir, tiny_space, tiny_t5_dir
from transformers import BertConfig, GPT2Config, LEDConfig, T5Config, T5ForConditionalGeneration

import search.driver.sweep  # noqa: F401  (imported here so that no case pays for the import)
from search.cli import main
from search.driver.preflight import check_inputs, check_resources
from search.space.config import ConfigError, config_from_dict, load_config

DROP = object()  # a change that removes the key


@dataclass(frozen=True)
class Case:
    """One bad input and what the user must be told.

    `changes` maps a dotted YAML path to its new value in the base space; strings may name
    `$MODELS`, `$TMP` (the case's own directory), `$DATA` (the tiny data) and `$PORT`/`$HTTP404`
    (a port nobody listens on, a server that is not MLflow).
    """

    id: str
    message: tuple[str, ...]  # fragments the error must contain
    changes: dict[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    text: Any = None  # the whole space.yaml when the file is the bad input; DROP: no file
    hub: bool = False  # a Hub name: answer "not found" without the network


def case(id: str, *message: str, **kwargs: Any) -> Case:
    return Case(id, message, **kwargs)


CASES = [
    # --- space.yaml itself ---------------------------------------------------------------
    case("malformed_yaml", "not valid YAML", "line 1", text="model: [unclosed\n"),
    case("top_level_list", "the top level must be a mapping, got a list", text="- a\n- b\n"),
    case("missing_file", "cannot read the file: No such file or directory", text=DROP),
    case("unknown_key", "modle: unknown key (known: ", changes={"modle": "t5"}),
    case(
        "unknown_nested_key", "data.sumary_column: unknown key", changes={"data.sumary_column": "x"}
    ),
    case(
        "unknown_range_key",
        "layers.encoder: unknown key(s) ['hihg'] in a range",
        changes={"layers.encoder": {"low": 1, "hihg": 3}},
    ),
    case("missing_required", "model: required", changes={"model": DROP}),
    case("wrong_type", "trials: expected int, got str 'many'", changes={"trials": "many"}),
    case(
        "section_not_mapping", "layers: expected a mapping, got a list", changes={"layers": [1, 2]}
    ),
    case(
        "empty_float_range",
        "train.learning_rate: empty range, low == high == 0.1",
        changes={"train.learning_rate": {"low": 0.1, "high": 0.1}},
    ),
    case(
        "inverted_range",
        "layers.encoder: inverted range, low 3 > high 1",
        changes={"layers.encoder": {"low": 3, "high": 1}},
    ),
    case(
        "empty_choices", "layers.strategy: empty list of choices", changes={"layers.strategy": []}
    ),
    case(
        "zero_layers",
        "layers.decoder: every side keeps at least one layer, got 0",
        changes={"layers.decoder": 0},
    ),
    case(
        "zero_layers_in_first",
        "first[0].encoder: a layer count of at least 1, got 0",
        changes={"first": [{"encoder": 0, "decoder": 1}]},
    ),
    case(
        "unknown_parameter_in_first",
        "first[0].decodr: unknown parameter",
        changes={"first": [{"encoder": 2, "decodr": 1}]},
    ),
    case(
        "fixed_parameter_in_first",
        "first[0].max_steps: 5, but train.max_steps is fixed at 2",
        changes={"first": [{"encoder": 2, "max_steps": 5}]},
    ),
    case(
        "grid_over_float_range",
        "train.learning_rate: the grid sampler needs a list or an integer range",
        changes={"sampler": {"name": "grid"}, "train.learning_rate": {"low": 1e-3, "high": 1e-2}},
    ),
    case(
        "unknown_metric",
        "objectives[0].metric: unknown metric 'bleu'",
        changes={"objectives": [{"metric": "bleu", "mode": "max"}]},
    ),
    case("empty_name", "name: an experiment name, not empty", changes={"name": ""}),
    case(
        "unsupported_data_file",
        "data.files.train: unsupported file type",
        changes={"data.files.train": "$TMP/train.txt"},
    ),
    # --- the command line -----------------------------------------------------------------
    case(
        "set_without_value", "override 'trials': expected KEY.PATH=VALUE", args=("--set", "trials")
    ),
    case(
        "set_bad_yaml",
        "override 'trials=[1': the value is not valid YAML",
        args=("--set", "trials=[1"),
    ),
    case(
        "set_through_scalar",
        "override 'trials.x=1': trials is not a mapping",
        args=("--set", "trials.x=1"),
    ),
    case("set_unknown_key", "data.sumary: unknown key", args=("--set", "data.sumary=x")),
    case("trials_flag_zero", "trials: must be at least 1, got 0", args=("--trials", "0")),
    case(
        "trials_flag_not_int",
        "argument --trials: invalid int value: 'abc'",
        args=("--trials", "abc"),
    ),
    # --- the model ------------------------------------------------------------------------
    case(
        "model_path_missing",
        "model '/no/such/model': no such directory",
        changes={"model": "/no/such/model"},
    ),
    case("model_dir_without_config", "has no config.json", changes={"model": "$MODELS/empty"}),
    case(
        "model_on_hub_missing",
        "model 'nobody/no-such-model' not found",
        changes={"model": "nobody/no-such-model"},
        hub=True,
    ),
    case(
        "decoder_only_gpt2",
        "is a 'gpt2' model, not an encoder-decoder",
        changes={"model": "$MODELS/gpt2"},
    ),
    case(
        "encoder_only_bert",
        "is a 'bert' model, not an encoder-decoder",
        changes={"model": "$MODELS/bert"},
    ),
    case(
        "unsupported_encoder_decoder",
        "/led': cannot shrink model type 'led'; supported model types: bart",
        changes={"model": "$MODELS/led"},
    ),
    case(
        "pickled_weights_only",
        "no model.safetensors",
        "found pytorch_model.bin",
        changes={"model": "$MODELS/bin"},
    ),
    case("no_tokenizer", "/notok': no tokenizer in", changes={"model": "$MODELS/notok"}),
    case(
        "tokenizer_larger_than_embeddings",
        "/vocab64': its tokenizer makes token id",
        "embeds only 64 tokens",
        changes={"model": "$MODELS/vocab64"},
    ),
    case(
        "encoder_layers_beyond_model",
        "layers.encoder: asks for up to 9 layers;",
        "/t5 has 4",
        changes={"layers.encoder": {"low": 1, "high": 9}},
    ),
    case(
        "decoder_layers_beyond_model",
        "layers.decoder: asks for up to 7 layers;",
        "/t5 has 3",
        changes={"layers.decoder": [1, 7]},
    ),
    case(
        "first_layers_beyond_model",
        "first[0].encoder: 9 layers; the model has 4",
        changes={"first": [{"encoder": 9, "decoder": 1}]},
    ),
    # --- the data -------------------------------------------------------------------------
    case(
        "dataset_dir_missing",
        "dataset directory not found: ./no/such/dataset",
        changes={"data.files": DROP, "data.name": "./no/such/dataset"},
    ),
    case(
        "dataset_on_hub_missing",
        "dataset 'missing/dataset' not found",
        changes={"data.files": DROP, "data.name": "missing/dataset"},
        hub=True,
    ),
    case(
        "data_file_missing",
        "data file not found for split 'train': $TMP/none.jsonl",
        changes={"data.files.train": "$TMP/none.jsonl"},
    ),
    case(
        "data_file_not_json",
        "cannot read $MODELS/broken.jsonl (split 'train') as json",
        changes={"data.files.train": "$MODELS/broken.jsonl"},
    ),
    case(
        "summary_column_missing",
        "split 'train' has no column(s) abstract (available: document, summary, package)",
        changes={"data.summary_column": "abstract"},
    ),
    case(
        "source_column_missing",
        "split 'train' has no column(s) article",
        changes={"data.source_template": DROP, "data.source_column": "article"},
    ),
    case(
        "template_column_missing",
        "split 'train' has no column(s) name",
        changes={"data.source_template": "{name}: {document}"},
    ),
    case(
        "empty_split",
        "split 'train' is empty: $MODELS/empty.jsonl has no rows",
        changes={"data.files.train": "$MODELS/empty.jsonl"},
    ),
    case(
        "split_missing",
        "split 'test' not found (available: train, validation)",
        changes={"data.eval_split": "test"},
    ),
    case(
        "source_too_long_without_truncation",
        "sources in split 'train' are longer than max_source_length=8 tokens",
        "set data.truncate",
        changes={"data.truncate": False, "data.max_source_length": 8},
    ),
    case(
        "source_beyond_bart_positions",
        "max_source_length=200 exceeds the 128 positions the model (bart) can read",
        changes={"model": "$MODELS/bart", "data.max_source_length": 200},
    ),
    case(
        "target_beyond_bart_positions",
        "data.max_target_length: 300 exceeds the 128 positions the decoder",
        changes={"model": "$MODELS/bart", "data.max_target_length": 300},
    ),
    case(
        "generation_beyond_bart_positions",
        "decoding.max_new_tokens: 300 exceeds the 128 positions the decoder",
        changes={"model": "$MODELS/bart", "decoding.max_new_tokens": 300},
    ),
    # --- the tracking store ---------------------------------------------------------------
    case(
        "tracking_server_unreachable",
        "tracking server http://127.0.0.1:$PORT is unreachable",
        args=("--tracking-uri", "http://127.0.0.1:$PORT"),
    ),
    case(
        "tracking_server_not_mlflow",
        "answered HTTP 404 to /health: is it an MLflow tracking server?",
        args=("--tracking-uri", "$HTTP404"),
    ),
    case(
        "store_under_a_file",
        "$MODELS/afile/mlflow is not writable ($MODELS/afile is a file)",
        args=("--store", "$MODELS/afile/mlflow"),
    ),
    case(
        "file_store_under_a_file",
        "tracking store file://$MODELS/afile/runs",
        "is not writable ($MODELS/afile is a file)",
        args=("--tracking-uri", "file://$MODELS/afile/runs"),
    ),
    # --- the Ray cluster ------------------------------------------------------------------
    case(
        "ray_cluster_unreachable",  # ray.init would retry this address for minutes
        "no Ray cluster answers at 127.0.0.1:$PORT",
        args=("--address", "127.0.0.1:$PORT"),
    ),
    case(
        "ray_address_without_port",
        "--address 'headnode': expected host:port of a Ray cluster's head",
        args=("--address", "headnode"),
    ),
    # --- the Optuna study's storage ---------------------------------------------------------
    case(
        "optuna_storage_not_a_url",
        "Optuna storage 'optuna.db' is not a database URL",
        args=("--optuna-storage", "optuna.db"),
    ),
    case(
        "optuna_storage_under_a_file",
        "Optuna storage sqlite:///$MODELS/afile/optuna.db: $MODELS/afile is not writable",
        args=("--optuna-storage", "sqlite:///$MODELS/afile/optuna.db"),
    ),
    case(
        "optuna_storage_server_unusable",  # no driver installed, or (with one) nobody listening
        "Optuna storage postgresql://shrink:***@127.0.0.1:$PORT/optuna",
        args=("--optuna-storage", "postgresql://shrink:secret@127.0.0.1:$PORT/optuna"),
    ),
    case(
        "nothing_to_extend",
        "no sweep in experiment 'tiny' at sqlite:///$TMP/store/mlflow.db: it holds no sweeps yet",
        args=("--resume", "--trials", "16"),
    ),
    case(
        "override_on_resume",
        "so train.max_steps=9, model=t5-small would not apply: start a new sweep to change it",
        args=("--resume", "--set", "train.max_steps=9", "--model", "t5-small", "--name", "tiny"),
    ),
    case(
        "optuna_storage_on_resume",
        "argument --optuna-storage: not allowed with argument --resume",
        args=("--resume", "--optuna-storage", "sqlite:///$TMP/optuna.db"),
    ),
]
SUBPROCESS_CASES = ("malformed_yaml", "decoder_only_gpt2", "tracking_server_unreachable")


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model and file the cases point at, built once: a few seconds."""
    root = tmp_path_factory.mktemp("bad_input")
    t5, bart = tiny_t5_dir(root / "t5"), tiny_bart_dir(root / "bart")
    (root / "empty").mkdir()
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(root / "gpt2")
    BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2).save_pretrained(
        root / "bert"
    )
    LEDConfig(d_model=32, encoder_layers=2, decoder_layers=2).save_pretrained(root / "led")
    shutil.copytree(bart, root / "bin")
    (root / "bin" / "model.safetensors").rename(root / "bin" / "pytorch_model.bin")
    shutil.copytree(bart, root / "notok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (root / "notok" / name).unlink()
    small = T5Config(vocab_size=64, d_model=16, d_ff=16, d_kv=4, num_heads=2, num_layers=4)
    T5ForConditionalGeneration(small).save_pretrained(root / "vocab64")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(t5 / name, root / "vocab64" / name)
    (root / "empty.jsonl").write_text("")
    (root / "broken.jsonl").write_text('{"document": "x", "summary": \n')
    (root / "afile").write_text("a file, not a directory\n")
    return root


@pytest.fixture(scope="session")
def http404() -> Iterator[str]:
    """A local HTTP server that answers 404 to everything: reachable, but not MLflow."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No case may reach the network, a real tracking server or a Ray cluster."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    yield
    if ray.is_initialized():  # a case that got as far as Ray failed; keep the others apart
        ray.shutdown()


def hub_says_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online mode, with the Hub's metadata calls answering "no such repository"."""

    class NotFound(RepositoryNotFoundError):
        def __init__(self) -> None:
            Exception.__init__(self, "404 Repository Not Found")

    def info(name: str, timeout: float | None = None) -> None:
        raise NotFound()

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", info)
    monkeypatch.setattr(huggingface_hub, "dataset_info", info)


# --- the space -------------------------------------------------------------------------------


def base_space(models: Path) -> dict[str, Any]:
    """A space that passes every check; each case breaks one thing in it."""
    space = tiny_space(
        models / "t5",
        layers={"encoder": {"low": 1, "high": 4}, "decoder": {"low": 1, "high": 3}},
        train={"max_steps": 2, "batch_size": 8},
        trials=1,
        first=[{"encoder": 4, "decoder": 3}],
    )
    del space["data"]["max_eval_examples"]  # every evaluation pair, so the check counts them
    return space


def apply_changes(space: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    space = copy.deepcopy(space)
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = space
        for part in parents:
            node = node[part]
        if value is DROP:
            node.pop(last)
        else:
            node[last] = value
    return space


def fill(value: Any, names: dict[str, str]) -> Any:
    """Put the fixtures' paths and ports into a case's strings."""
    if isinstance(value, str):
        return Template(value).safe_substitute(names)
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(fill(v, names) for v in value)
    return value


@dataclass(frozen=True)
class Command:
    """A case made concrete: the command line and what to check after it ran."""

    argv: list[str]
    message: tuple[str, ...]
    store: Path
    workdir: Path  # the command's working directory: must stay empty


def build_command(c: Case, directory: Path, models: Path, port: int, http404: str) -> Command:
    names = {
        "MODELS": str(models),
        "TMP": str(directory),
        "DATA": str(TINY_DATA),
        "PORT": str(port),
        "HTTP404": http404,
    }
    space = directory / "space.yaml"
    if isinstance(c.text, str):
        space.write_text(c.text)
    elif c.text is None:
        changes = fill(c.changes, names)
        space.write_text(yaml.safe_dump(apply_changes(base_space(models), changes)))
    store = directory / "store"
    workdir = directory / "cwd"
    workdir.mkdir()
    argv = ["run", str(space), "--store", str(store), *fill(c.args, names)]
    return Command(argv, fill(c.message, names), store, workdir)


# --- what "refused before any work" means ----------------------------------------------------


def assert_nothing_written(store: Path, workdir: Path) -> None:
    """No store at all (not even an empty directory), nothing in the working directory."""
    assert not store.exists()
    assert list(workdir.iterdir()) == []
    assert not ray.is_initialized()


def assert_one_clear_message(stderr: str, message: tuple[str, ...]) -> None:
    assert "Traceback" not in stderr
    assert stderr.count("error: ") == 1, stderr  # one error, listing every problem
    for fragment in message:
        assert fragment in stderr


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_any_work(
    c: Case,
    tmp_path: Path,
    models: Path,
    free_port: int,
    http404: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    command = build_command(c, tmp_path, models, free_port, http404)
    if c.hub:
        hub_says_not_found(monkeypatch)
    monkeypatch.chdir(command.workdir)
    try:
        code = main(command.argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert_one_clear_message(stderr, command.message)
    assert_nothing_written(command.store, command.workdir)


def test_the_table_is_distinct_and_large_enough() -> None:
    keys = [(c.text, repr(c.changes), c.args) for c in CASES]
    assert len(set(keys)) == len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_base_space_passes_every_check(tmp_path: Path, models: Path) -> None:
    """So each case fails for its own change, not for something in the base."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(base_space(models)))
    model_config, splits = check_inputs(load_config(space))
    assert model_config.model_type == "t5"
    assert (len(splits["train"]), len(splits["eval"])) == (200, 30)


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_the_real_command_exits_2(
    case_id: str, tmp_path: Path, models: Path, free_port: int, http404: str
) -> None:
    c = next(c for c in CASES if c.id == case_id)
    command = build_command(c, tmp_path, models, free_port, http404)
    done = subprocess.run(
        [sys.executable, "-m", "search.cli", *command.argv],
        cwd=command.workdir,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("shrink-sweep: error: ")
    assert_one_clear_message(done.stderr, command.message)
    assert_nothing_written(command.store, command.workdir)


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    return env | {"HF_HUB_OFFLINE": "1"}


def test_an_existing_store_gains_no_run_and_no_study(
    tmp_path: Path,
    models: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that already holds a sweep keeps exactly what it had."""
    import optuna
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    client.create_run(client.create_experiment("tiny"))
    optuna.create_study(study_name="earlier", storage=f"sqlite:///{store / 'optuna.db'}")
    before = store_rows(store)
    assert before == {"runs": 1, "experiments": 2, "studies": 1}  # with MLflow's Default
    for change in ({"layers.decoder": [1, 7]}, {"data.summary_column": "abstract"}):
        space = tmp_path / "space.yaml"
        space.write_text(yaml.safe_dump(apply_changes(base_space(models), change)))
        assert main(["run", str(space), "--store", str(store)]) == 2
        assert "error: " in capsys.readouterr().err
        assert store_rows(store) == before
    assert sorted(p.name for p in store.iterdir()) == ["mlflow.db", "optuna.db"]


def store_rows(store: Path) -> dict[str, int]:
    with sqlite3.connect(store / "mlflow.db") as mlflow_db:
        runs = mlflow_db.execute("select count(*) from runs").fetchone()[0]
        experiments = mlflow_db.execute("select count(*) from experiments").fetchone()[0]
    with sqlite3.connect(store / "optuna.db") as optuna_db:
        studies = optuna_db.execute("select count(*) from studies").fetchone()[0]
    return {"runs": runs, "experiments": experiments, "studies": studies}


# --- a check made once Ray knows the machine, called here on its own ------------------------


def test_a_trial_larger_than_this_machine_is_refused(models: Path) -> None:
    """A local Ray waits forever for a trial it can never place (Tune only warns)."""
    space = apply_changes(base_space(models), {"resources": {"cpus": 10_000, "gpus": 64}})
    with pytest.raises(ConfigError) as caught:
        check_resources(config_from_dict(space))
    assert caught.value.problems[0].startswith("resources.cpus: each trial asks for 10000 CPUs")
    assert caught.value.problems[1].startswith("resources.gpus: each trial asks for 64 GPUs")
    check_resources(config_from_dict(base_space(models)))
