"""What an export tells people: the model card (README.md of the export directory, filled in
from the template `card.md` beside this file) and the lines the CLI prints when it is done.

Both show the scores on the evaluation split (where the sweep chose the trial) and on the
held-out test split side by side, for fp32 and int8.
"""

from __future__ import annotations

from dataclasses import fields
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any

from search.console import cell
from search.export.int8 import INT8_DIR, INT8_WEIGHTS, load_int8
from search.export.model_dir import PIPELINE_FILE

if TYPE_CHECKING:
    from search.export.results import ExportResult, HeldOutScores
    from search.space.config import DecodingConfig, SweepConfig

CARD_TEMPLATE = "card.md"
INT8_TARGET = 0.30  # int8 weights on disk as a share of fp32
SCORES = (  # measured on a split
    ("rouge1", "ROUGE-1"),
    ("rouge2", "ROUGE-2"),
    ("rougeL", "ROUGE-L"),
    ("rougeLsum", "ROUGE-Lsum"),
    ("eval_loss", "eval loss"),
    ("latency_ms", "latency (ms per example)"),
)


def report_lines(result: ExportResult) -> list[str]:
    """What the CLI prints once an export is done: ROUGE-L on validation and test, sizes,
    latencies, the registered version."""
    fp32, int8, test = result.fp32, result.int8, result.test
    recorded = float(result.pick.row["rougeL"])
    target = "" if result.int8_ratio <= INT8_TARGET else f", above the {INT8_TARGET:.0%} target"
    drop = f"int8 drops ROUGE-L {fp32['rougeL'] - int8['rougeL']:.2f} points on validation"
    if test.scored:
        drop += f", {test.fp32['rougeL'] - test.int8['rougeL']:.2f} on {test.split}"
        held_out = f"{test.split}: {test.fp32['examples']:,.0f} held-out pairs, which no trial saw"
    else:
        held_out = f"{test.split}: not scored, {test.missing}"
    return [
        f"wrote {result.directory}",
        *_report_table(result),
        f"  validation: {fp32['examples']:,.0f} pairs, where the sweep chose the trial (it "
        f"recorded ROUGE-L {recorded:.2f})",
        f"  {held_out}",
        f"  {drop}",
        f"  int8 weights are {result.int8_ratio:.1%} of fp32 on disk "
        f"(fp32/int8 = {1 / result.int8_ratio:.1f}x{target})",
        f"registered {result.model_name} version {result.version}",
        f'try it: pipeline("summarization", model="{result.directory}", trust_remote_code=True)',
    ]


def _report_table(result: ExportResult) -> list[str]:
    """ROUGE-L on validation and test side by side, then size and latency, for fp32 and int8."""
    test = result.test
    rows = [["ROUGE-L", "validation", test.split, "MB", "ms/example"]]
    for name, scores, on_test in (
        ("fp32", result.fp32, test.fp32),
        ("int8", result.int8, test.int8),
    ):
        held_out = f"{on_test['rougeL']:.2f}" if on_test else "-"
        rows.append([name, f"{scores['rougeL']:.2f}", held_out, f"{scores['size_mb']:.2f}",
                     f"{scores['latency_ms']:.1f}"])  # fmt: skip
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    lines = []
    for first, *values in rows:
        cells = [
            first.ljust(widths[0]),
            *(v.rjust(w) for v, w in zip(values, widths[1:], strict=True)),
        ]
        lines.append("  " + "  ".join(cells))
    return lines


def model_card(result: ExportResult, config: SweepConfig) -> str:
    """The README.md of an export directory: what the model is, how good, how to use it."""
    template = resources.files(__package__).joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")
    return Template(template).substitute(
        **_about(result),
        **_use(config),
        **_evaluation(result, config),
        training_table=_training_table(result.pick.row),
        objectives=", ".join(f"{o.metric} ({o.mode})" for o in config.objectives),
        front_table=_front_table(result, [o.metric for o in config.objectives]),
        pipeline_file=PIPELINE_FILE,
        int8_dir=INT8_DIR,
        int8_weights=INT8_WEIGHTS,
        int8_module=load_int8.__module__,
    )


def _about(result: ExportResult) -> dict[str, Any]:
    row, info = result.pick.row, result.sweep
    return {
        "name": result.directory.name,
        "base_model": info.base_model,
        "sweep": info.name,
        "run_id": info.run_id,
        "trial": result.pick.trial,
        "encoder_layers": row.get("encoder_layers"),
        "parent_encoder_layers": info.parent_layers[0],
        "decoder_layers": row.get("decoder_layers"),
        "parent_decoder_layers": info.parent_layers[1],
        "strategy": row.get("strategy", "?"),
        "reason": result.pick.reason,
    }


def _use(config: SweepConfig) -> dict[str, Any]:
    data = config.data
    return {
        "decoding": _decoding_text(config.decoding),
        "source": data.source_template or f"{{{data.source_column}}}",
        "prefix": f" after the prefix `{data.source_prefix}`" if data.source_prefix else "",
        "max_source_length": data.max_source_length,
    }


def _evaluation(result: ExportResult, config: SweepConfig) -> dict[str, Any]:
    fp32, int8, test, data = result.fp32, result.int8, result.test, config.data
    sizes = ["| | fp32 | int8 |", "|---|---:|---:|"]
    sizes.append(f"| weights on disk (MB) | {fp32['size_mb']:.2f} | {int8['size_mb']:.2f} |")
    sizes.append(f"| parameters | {fp32['params']:,.0f} | {int8['params']:,.0f} |")
    change = f"{int8['rougeL'] - fp32['rougeL']:+.2f} points on `{data.eval_split}`"
    if test.scored:
        change += f", {test.int8['rougeL'] - test.fp32['rougeL']:+.2f} on `{test.split}`"
    return {
        "examples": f"{fp32['examples']:,.0f}",
        "eval_split": data.eval_split,
        "eval_data": data.name or data.files.get(data.eval_split, "?"),
        "test_text": _test_text(test, data.name or data.files.get(test.split, "?")),
        "threads": result.threads,
        "recorded": f"{float(result.pick.row['rougeL']):.2f}",
        "scores_table": _scores_table(result, data.eval_split),
        "sizes_table": "\n".join(sizes),
        "int8_share": f"{result.int8_ratio:.1%}",
        "int8_change": change,
    }


def _test_text(test: HeldOutScores, source: str) -> str:
    if not test.scored:
        return f"Not scored on a held-out split: {test.missing}."
    return (
        f"The `{test.split}` columns are {test.fp32['examples']:,.0f} examples of the "
        f"`{test.split}` split of `{source}`, which no trial saw: the estimate to quote."
    )


def _scores_table(result: ExportResult, eval_split: str) -> str:
    """Evaluation and test scores side by side for fp32, then for int8."""
    columns = [("fp32", eval_split, result.fp32), ("int8", eval_split, result.int8)]
    if result.test.scored:
        test = result.test
        columns.insert(1, ("fp32", test.split, test.fp32))
        columns.append(("int8", test.split, test.int8))
    lines = [
        "| | " + " | ".join(f"{kind} `{split}`" for kind, split, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for key, label in SCORES:
        lines.append(f"| {label} | " + " | ".join(f"{s[key]:.2f}" for *_, s in columns) + " |")
    lines.append("| examples | " + " | ".join(f"{s['examples']:,.0f}" for *_, s in columns) + " |")
    return "\n".join(lines)


def _training_table(row: dict[str, Any]) -> str:
    from trainables.config import TrainConfig

    names = ["strategy", "encoder_layers", "decoder_layers", *(f.name for f in fields(TrainConfig))]
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {name} | {row[name]} |" for name in names if row.get(name) is not None]
    return "\n".join(lines)


def _front_table(result: ExportResult, metrics: list[str]) -> str:
    columns = [*metrics, "encoder_layers", "decoder_layers"]
    columns += [c for c in ("rougeL", "params", "size_mb", "latency_ms") if c not in columns]
    lines = ["| trial | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in result.front:
        trial = str(row["trial"])
        mark = f"**{trial}**" if trial == result.pick.trial else trial
        lines.append(f"| {mark} | " + " | ".join(cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _decoding_text(decoding: DecodingConfig) -> str:
    search = "greedy search" if decoding.num_beams == 1 else f"beam search ({decoding.num_beams})"
    return (
        f"{search}, at most {decoding.max_new_tokens} new tokens, "
        f"no_repeat_ngram_size {decoding.no_repeat_ngram_size}"
    )
