"""Write the tiny test dataset: made-up software package descriptions with one-line summaries.

The rows mimic the demo data (`document`, `summary`, `package`) but are generated from
templates with a fixed seed, so they are small, license-free and reproducible:

    python tests/data/make_tiny.py   # rewrites tests/data/tiny/{train,validation,test}.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 1234
SIZES = {"train": 200, "validation": 30, "test": 30}  # test: only export scores it
OUT = Path(__file__).parent / "tiny"

ROOTS = [
    "zip",
    "pixel",
    "chart",
    "mail",
    "sound",
    "net",
    "crypt",
    "text",
    "geo",
    "clock",
    "font",
    "disk",
    "shell",
    "wave",
    "grid",
    "map",
    "log",
    "note",
    "scan",
    "sync",
]
SUFFIXES = ["", "-tools", "-utils", "d", "-cli", "lib", "-viewer"]
KINDS = ["library", "command-line tool", "daemon", "graphical program", "Python module"]
ADJECTIVES = ["fast", "small", "simple", "portable", "secure", "lightweight", "flexible"]
TASKS = [
    ("reading and writing", "PNG images"),
    ("compressing", "archive files"),
    ("parsing", "JSON documents"),
    ("sending", "email messages"),
    ("playing", "audio files"),
    ("monitoring", "network traffic"),
    ("encrypting", "backup disks"),
    ("drawing", "bar charts"),
    ("converting", "map coordinates"),
    ("searching", "log files"),
    ("synchronizing", "file trees"),
    ("rendering", "TrueType fonts"),
]
FEATURES = [
    "a plugin system",
    "Unicode input",
    "streaming mode",
    "a batch mode",
    "colour output",
    "remote access",
    "configuration files",
    "multiple threads",
]
EXTRAS = [
    "It is written in C and has no other dependencies.",
    "The code is well tested and used in production.",
    "Documentation and examples are included.",
    "This package contains the development headers.",
    "This package contains the command-line front end.",
    "",
]


def make_row(rng: random.Random) -> dict[str, str]:
    """One package: a name, a 2-3 sentence description and a one-line summary."""
    package = rng.choice(["", "lib", "py"]) + rng.choice(ROOTS) + rng.choice(SUFFIXES)
    kind, adjective = rng.choice(KINDS), rng.choice(ADJECTIVES)
    verb, thing = rng.choice(TASKS)
    first, second = rng.sample(FEATURES, 2)
    article = "an" if adjective[0] in "aeiou" else "a"
    document = (
        f"{package} is {article} {adjective} {kind} for {verb} {thing}. "
        f"It supports {first} and {second}. {rng.choice(EXTRAS)}"
    ).strip()
    summary = f"{adjective} {kind} for {verb} {thing}"
    return {"document": document, "summary": summary, "package": package}


def main() -> None:
    rng = random.Random(SEED)
    OUT.mkdir(exist_ok=True)
    for split, size in SIZES.items():
        rows = [make_row(rng) for _ in range(size)]
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (OUT / f"{split}.jsonl").write_text(text)


if __name__ == "__main__":
    main()
