"""The preparation before the first trial: does it scale with workers, and does a large data set
fit the driver?

Four measurements, printed side by side:
- pseudo-label throughput of the demo teacher (its decoding, 4 beams) with 1 worker of 1 CPU,
  2 workers of 1 CPU each (the scaling: one more worker, one more CPU) and 1 worker of 2 CPUs
  (the same machine not split), on the same sources, rounds interleaved; the product's own
  workers (`search.driver.workers`);
- the zero-shot screen of the default space (71 students, 64 pairs) the same three ways;
- the driver's peak RSS and wall time to prepare a synthetic CNN/DailyMail-shaped set (about
  600-word sources, 45-word summaries, `max_source_length: 1024`, no pseudo-labels, no screen)
  through `search.driver.preflight.prepare`, in a child process. The set is made here from the
  demo data's words and never kept in the repo;
- the private memory each of two trials at once adds on that set, sent through Ray's object store
  as the sweep sends it: reading it in place (the product) against holding a private copy.

    python -m bench.prepare                          # all four, 287,113 pairs
    python -m bench.prepare --pairs 30000 --skip-workers
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DEFAULT_SPACE

CNN_DAILYMAIL_PAIRS = 287_113
SOURCE_WORDS, SUMMARY_WORDS = 600, 45
LABEL_SOURCES = 512  # pseudo-labeled per round
ROUNDS = 3


def worker_rounds(rounds: int, sources: int) -> None:
    """Pseudo-labels and the screen with 1 worker (2 CPUs) and 2 workers (1 CPU each)."""
    import ray

    from search.driver.preflight import prepare
    from search.space.config import load_config

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    shapes = {  # resources.cpus, and how many trials (so workers) may run at once
        "1 worker x 1 CPU": ("1", "1"),
        "2 workers x 1 CPU": ("1", "0"),
        "1 worker x 2 CPUs": ("2", "0"),
    }
    configs = {
        name: load_config(
            DEFAULT_SPACE,
            [f"resources.cpus={cpus}", f"max_concurrent={most}", "sampler.screen=64"],
        )
        for name, (cpus, most) in shapes.items()
    }
    prepared = prepare(configs[next(iter(shapes))])
    timings: dict[str, list[dict[str, float]]] = {name: [] for name in shapes}
    for _ in range(rounds):
        for name, config in configs.items():
            seconds = one_round(config, prepared, sources)
            timings[name].append(seconds)
            shown = ", ".join(f"{step} {value:.1f}s" for step, value in seconds.items())
            print(f"{name}: {shown}", flush=True)
    ray.shutdown()
    median = {
        name: {step: statistics.median(r[step] for r in runs) for step in runs[0]}
        for name, runs in timings.items()
    }
    one, two, wide = (median[name] for name in shapes)
    print(f"\nmedian of {rounds} rounds; {' / '.join(shapes)}:")
    print(
        f"  workers started (model loaded): "
        f"{one['start']:.1f}s / {two['start']:.1f}s / {wide['start']:.1f}s"
    )
    rates = [sources / m["labels"] for m in (one, two, wide)]
    print(
        f"  pseudo-labels, {sources} sources: {' / '.join(f'{r:.1f}' for r in rates)} sources/s; "
        f"2 workers / 1 worker {rates[1] / rates[0]:.2f} (target >= 1.7), "
        f"2 workers x 1 CPU / 1 worker x 2 CPUs {rates[1] / rates[2]:.2f}"
    )
    print(
        f"  screen, 71 students x 64 pairs: "
        f"{one['screen']:.1f}s / {two['screen']:.1f}s / {wide['screen']:.1f}s; "
        f"time 2 workers / 1 worker {two['screen'] / one['screen']:.2f}"
    )


def one_round(config: Any, prepared: Any, sources: int) -> dict[str, float]:
    """Start the workers, label `sources` training sources, screen the space; the seconds of
    each step."""
    from search.driver.workers import BaseWorkers
    from search.strategy.screen import screen_students
    from trainables.pseudo import shard_plan

    rows = list(prepared.data.train_input_ids)[:sources]
    plan = shard_plan([len(row) for row in rows])
    shards = {i: [rows[j] for j in shard] for i, shard in enumerate(plan)}
    workers = BaseWorkers(config)
    marks = [time.perf_counter()]
    try:
        workers.start(prepared.base, len(shards))
        marks.append(time.perf_counter())
        workers.make_shards(prepared.base, config.decoding)(shards, lambda index, texts: None)
        marks.append(time.perf_counter())
        screen_students(config, prepared, functools.partial(workers.zero_shot, prepared.base))
        marks.append(time.perf_counter())
    finally:
        workers.close()
    steps = np.diff(marks)
    return {"start": steps[0], "labels": steps[1], "screen": steps[2]}


def synthetic_pairs(path: Path, pairs: int, seed: int = 0) -> Path:
    """A JSONL file of CNN/DailyMail-shaped pairs, words drawn from the demo data."""
    demo = Path(__file__).resolve().parent.parent / "trainables" / "demo" / "data"
    with gzip.open(demo / "train.jsonl.gz", "rt") as f:
        words = sorted({w for line in f for w in json.loads(line)["document"].split()})
    rng = np.random.default_rng(seed)
    vocabulary = np.array(words)
    with path.open("w") as out:
        for first in range(0, pairs, 1000):
            n = min(1000, pairs - first)
            source = rng.integers(0, len(vocabulary), (n, SOURCE_WORDS))
            summary = rng.integers(0, len(vocabulary), (n, SUMMARY_WORDS))
            for s, t in zip(source, summary, strict=True):
                row = {"article": " ".join(vocabulary[s]), "highlights": " ".join(vocabulary[t])}
                out.write(json.dumps(row) + "\n")
    return path


PREPARE_CHILD = """
import sys, time, resource
from bench.prepare import trials_memory
from search.driver.preflight import prepare
from search.space.config import load_config
start = time.perf_counter()
config = load_config(sys.argv[1], sys.argv[2:])
prepared = prepare(config)
seconds = time.perf_counter() - start
tokens = int(prepared.data.train_input_ids.offsets[-1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(f"prepared {len(prepared.data.train_input_ids)} {tokens} {seconds:.1f} {peak}", flush=True)
trials_memory(prepared, config)
"""

TRIAL_STEPS = 2


def trials_memory(prepared: Any, config: Any) -> None:
    """Two trials at once on the prepared data sent through Ray's object store, as the sweep
    sends it; print the private memory (RssAnon) each added, reading the data in place (the
    product) and holding a private copy of it (what a trial would hold otherwise), and the
    data's size. The trials train on `targets: both`, with every source pseudo-labeled by its
    own gold summary: the largest selection a trial makes."""
    import ray

    from trainables.config import TrainConfig, TrialConfig

    data = prepared.data
    everything = np.arange(len(data.train_input_ids))
    data = data.with_pseudo_labels(everything, data.train_labels.take(everything))
    size = sum(
        rows.values.nbytes + rows.offsets.nbytes
        for rows in (data.train_input_ids, data.train_labels, data.eval_input_ids)
    )
    train = TrainConfig(max_steps=TRIAL_STEPS, batch_size=4, targets="both", eval_every=0)
    trial = TrialConfig("sft", (0, 1), (0,), train)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    sent = ray.put(data)
    added = {}
    for copied in (False, False, True):  # the first pair warms the workers (imports, torch)
        runs = [
            _remote_trial().remote(trial, prepared.base, sent, config.decoding, copied)
            for _ in range(2)
        ]
        added[copied] = ray.get(runs)
    ray.shutdown()
    print(
        f"trials: 2 at once on {len(data.train_input_ids):,} pairs ({size / 1e9:.2f} GB of "
        f"tokens in the object store), {TRIAL_STEPS} steps each, targets both"
    )
    for copied, name in ((False, "read in place"), (True, "private copy")):
        shown = " / ".join(f"{a / 1e9:.2f}" for a in added[copied])
        print(f"  {name}: each trial added {shown} GB (peak RssAnon over its start)")
    ratio = max(added[False]) / max(added[True])
    print(f"  in place / copy: {ratio:.2f}")


def _rss_anon() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024


@functools.cache
def _remote_trial() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_trial_added_memory)


def _trial_added_memory(trial: Any, base: Any, data: Any, decoding: Any, copied: bool) -> int:
    """Run one trial; its peak RssAnon over the one at its start (sampled every 20 ms)."""
    import copy
    import threading

    from trainables.trial import run_trial

    start, peak, done = _rss_anon(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _rss_anon())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        if copied:
            data = copy.deepcopy(data)  # writable arrays of its own
        with tempfile.TemporaryDirectory() as tmp:
            run_trial(trial, base, data, decoding, save_dir=Path(tmp) / "model", threads=1)
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _rss_anon()) - start


def driver_at_scale(pairs: int) -> None:
    """Prepare `pairs` synthetic pairs in a child process; print its peak RSS and time."""
    with tempfile.TemporaryDirectory() as tmp:
        made = time.perf_counter()
        train = synthetic_pairs(Path(tmp) / "train.jsonl", pairs)
        valid = synthetic_pairs(Path(tmp) / "validation.jsonl", 200, seed=1)
        print(f"made {pairs:,} synthetic pairs in {time.perf_counter() - made:.0f}s", flush=True)
        overrides = [
            "data.name=null",
            f"data.files={{train: {train}, validation: {valid}}}",
            "data.source_column=article",
            "data.source_template=null",
            "data.summary_column=highlights",
            "data.max_source_length=1024",
            "data.max_target_length=128",
            "data.pseudo_examples=null",
            "train.targets=gold",
            "sampler.screen=0",
            "data.max_eval_examples=8",
        ]
        env = {"HF_DATASETS_CACHE": str(Path(tmp) / "datasets")}
        done = subprocess.run(
            [sys.executable, "-c", PREPARE_CHILD, str(DEFAULT_SPACE), *overrides],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        prepared, *trials = done.stdout[done.stdout.index("prepared ") :].splitlines()
        rows, tokens, seconds, peak = prepared.split()[1:]
        print(
            f"driver: {int(rows):,} pairs, {int(tokens) / 1e6:.1f}M source tokens, prepared in "
            f"{float(seconds):.0f}s, peak RSS {int(peak) / 1e9:.2f} GB "
            f"({int(peak) / int(tokens):.0f} bytes per source token; targets <= 8 GB, <= 600 s)"
        )
        print("\n".join(trials))
    print(
        f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=CNN_DAILYMAIL_PAIRS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--sources", type=int, default=LABEL_SOURCES)
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    if not args.skip_workers:
        worker_rounds(args.rounds, args.sources)
    if not args.skip_scale:
        driver_at_scale(args.pairs)


if __name__ == "__main__":
    main()
