"""What does a user get by shipping the exported knee instead of the teacher?

Exports a finished sweep's knee (`shrink-sweep export`, fp32 and int8) and measures it beside the
base model on the sweep's own evaluation data and decoding: parameters, weights on disk (fp32
for both, the teacher re-saved in fp32 since the demo teacher ships in fp16), CPU generation
latency per example at batch size 1 on one thread (the three models interleaved, median of
repeats) and ROUGE-L. Everything is printed as ratios to the teacher.

    shrink-sweep run && python -m bench.export_vs_teacher          # the default sweep's knee
    python -m bench.export_vs_teacher --store mlflow --sweep SWEEP --space space.yaml
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import DEFAULT_SPACE, REPO
from search.export.int8 import load_int8
from search.export.ship import eval_data
from search.space.config import load_config
from trainables.scoring import evaluate_model, generate_summaries
from trainables.shrink import count_parameters
from trainables.trial import load_base, resolve_model
from trainables.trial import size_on_disk_mb as weights_mb


def export_knee(store: Path, sweep: str | None, space: Path, out: Path) -> None:
    command = [sys.executable, "-m", "search.cli", "export", *([sweep] if sweep else [])]
    command += ["--store", str(store), "--space", str(space), "--out", str(out)]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def latency_ms(models: dict, tokenizer, data, decoding, examples: int, repeats: int) -> dict:
    """Median ms per example at batch size 1, the models taking turns in every repeat."""
    sources = [data.eval_input_ids[i] for i in range(min(examples, len(data.eval_input_ids)))]
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(generate_summaries(model, tokenizer, sources, decoding, 1)[1])
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "mlflow")
    parser.add_argument("--sweep", help="default: the latest sweep in the store")
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--latency-examples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(args.space)
    with tempfile.TemporaryDirectory() as tmp:
        knee_dir, teacher_dir = Path(tmp) / "knee", Path(tmp) / "teacher"
        export_knee(args.store, args.sweep, args.space, knee_dir)
        teacher, tokenizer = load_base(resolve_model(config.model))
        teacher.float().save_pretrained(teacher_dir)
        models = {
            "teacher": teacher,
            "knee fp32": load_base(str(knee_dir))[0],
            "knee int8": load_int8(knee_dir),
        }
        sizes = {
            "teacher": weights_mb(teacher_dir),
            "knee fp32": weights_mb(knee_dir),
            "knee int8": sum(p.stat().st_size for p in (knee_dir / "int8").iterdir()) / 1e6,
        }
        data = eval_data(config, tokenizer)
        rouge = {
            n: evaluate_model(m, tokenizer, data, config.decoding)["rougeL"]
            for n, m in models.items()
        }
        latency = latency_ms(
            models, tokenizer, data, config.decoding, args.latency_examples, args.repeats
        )
    params = {n: count_parameters(m).total for n, m in models.items() if n != "knee int8"}
    params["knee int8"] = params["knee fp32"]
    print(f"{len(data.eval_references)} evaluation examples; latency on {args.latency_examples}")
    print(f"{'':10} {'params':>9} {'MB':>6} {'ms/ex':>7} {'ROUGE-L':>7}   ratios to the teacher")
    for name in models:
        ratios = [
            params[name] / params["teacher"],
            sizes[name] / sizes["teacher"],
            latency[name] / latency["teacher"],
            rouge[name] / rouge["teacher"],
        ]
        print(
            f"{name:10} {params[name]:9d} {sizes[name]:6.2f} {latency[name]:7.1f} "
            f"{rouge[name]:7.2f}   " + "  ".join(f"{r:.3f}" for r in ratios)
        )


if __name__ == "__main__":
    main()
