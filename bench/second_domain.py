"""A second domain the demo teacher never saw, made from the shipped data: a package
description's opening sentence, written from the rest of the description.

The teacher learned Debian synopses ("Real-time strategy game of ancient warfare"); here the
summary is the description's first sentence ("0 A.D. is a free, open-source ... game of
ancient warfare."), which it has never been asked to write, from the sentences that follow it.
Same texts, a different summary convention: what a user meets who points the shipped
space.yaml at their own pairs. The splits are the shipped ones (split by source family), so no
package is in two of them.

    python -m bench.second_domain          # writes runs/second-domain/ and its space.yaml

Then, at the same trials and budget (bench/README.md, "Recipe on a second domain"):

    shrink-sweep run runs/second-domain/space.yaml                          # targets: auto
    shrink-sweep run runs/second-domain/space.yaml --set train.targets=gold
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import yaml

from bench.common import DEFAULT_SPACE, REPO
from trainables.data import builtin_files
from trainables.rouge import split_sentences

OUT = REPO / "runs" / "second-domain"
SUMMARY_WORDS = (6, 24)  # an opening sentence kept as a summary: a headline's length, not a page
MIN_SOURCE_WORDS = 10  # what is left to read after the opening sentence


def split_pair(record: dict) -> dict | None:
    """The record as (package, rest of the description -> its first sentence), or None when
    the description has no usable second part."""
    sentences = split_sentences(record["document"])  # as ROUGE-Lsum splits them
    if len(sentences) < 2:
        return None
    first, rest = sentences[0], " ".join(sentences[1:])
    if not SUMMARY_WORDS[0] <= len(first.split()) <= SUMMARY_WORDS[1]:
        return None
    if len(rest.split()) < MIN_SOURCE_WORDS:
        return None
    return {"package": record["package"], "document": rest, "summary": first}


def build(out: Path = OUT) -> dict[str, int]:
    """Write each shipped split as the second domain's jsonl.gz; pairs kept per split."""
    out.mkdir(parents=True, exist_ok=True)
    kept = {}
    for split, path in builtin_files("builtin:debian-descriptions").items():
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            pairs = [p for p in map(split_pair, map(json.loads, lines)) if p is not None]
        with gzip.open(out / f"{split}.jsonl.gz", "wt", encoding="utf-8") as file:
            file.writelines(json.dumps(pair) + "\n" for pair in pairs)
        kept[split] = len(pairs)
    return kept


def write_space(out: Path = OUT) -> Path:
    """The shipped space.yaml pointed at the second domain through `data.files`, nothing else
    changed: what a user copying it would run."""
    space = yaml.safe_load(DEFAULT_SPACE.read_text())
    data = dict(space["data"])
    data.pop("name")
    data["files"] = {split: str(out / f"{split}.jsonl.gz") for split in ("train", "validation")}
    space["data"] = data
    space["name"] = "second-domain"
    path = out / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    kept = build()
    print(", ".join(f"{split}: {n:,} pairs" for split, n in kept.items()))
    print(f"space: {write_space()}")


if __name__ == "__main__":
    main()
