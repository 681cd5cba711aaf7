"""Build the demo summarization dataset from Debian package descriptions.

Each record pairs a package's long description (the document) with its one-line
synopsis (the summary). The split is by source-package family, so sibling packages
(libfoo1, libfoo-dev, foo-utils, ...) never straddle train and test.

Fetch the inputs (Debian bookworm main, English descriptions) without touching the
system's apt state:

    mkdir -p /tmp/emptyparts /tmp/aptl/partial /tmp/aptcache
    printf 'Dir::Etc::Parts "/tmp/emptyparts";\\nAcquire::Languages { "en"; };\\n' \\
        > /tmp/aptlang.conf
    APT_CONFIG=/tmp/aptlang.conf apt-get -o Dir::State::Lists=/tmp/aptl \\
        -o Dir::Cache=/tmp/aptcache update

Then:

    python -m scripts.make_dataset \\
        --translations /tmp/aptl/deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en \\
        --packages /tmp/aptl/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages \\
        --release /tmp/aptl/deb.debian.org_debian_dists_bookworm_InRelease \\
        --out trainables/demo/data

The output is deterministic: rerunning on the same index gives byte-identical files. The
lead baseline is scored as `scripts.eval_teacher` scores it; DATA_CARD.md is rendered from
`scripts/templates/data_card.md`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.cards import render
from scripts.eval_teacher import lead_k, lead_predictions, rouge

SPLITS = ("train", "validation", "test")
MIN_DOCUMENT_WORDS = 10
DEDUP_PREFIX_CHARS = 200

# Source-name prefixes that name a language ecosystem rather than a project; for these,
# the family takes more name components (python-django-*, golang-github-<owner>-*, r-cran-*).
ECOSYSTEM_DEPTH = {
    "python": 2,
    "golang": 3,
    "node": 2,
    "ruby": 2,
    "rust": 2,
    "haskell": 2,
    "php": 2,
    "lua": 2,
    "ocaml": 2,
    "elpa": 2,
    "emacs": 2,
    "fonts": 2,
    "texlive": 2,
    "r": 3,
    "libjs": 2,
    "xfonts": 2,
    "vim": 2,
    "coq": 2,
    "trytond": 3,
    "sphinx": 2,
    "jupyter": 2,
    "gap": 2,
}

DEBUG_NAME = re.compile(r"-(dbg|dbgsym)$")
DEBUG_TEXT = re.compile(r"\bdebug(ging)? symbols\b", re.I)
TRANSITIONAL = re.compile(r"\b(transitional|dummy)\b", re.I)
# Synopses that name a package's role in a split source rather than what it does.
ROLE_SYNOPSIS = re.compile(
    r"(development|header|devel|include) files|\bdocumentation\b|\bdocs\b|\bdata files\b"
    r"|\bcommon files\b|\bshared files\b|\bdata package\b|\bcommon package\b"
    r"|- feature \"|\bRust source code\b|\bmetapackage\b|\(examples\)|\bexamples$"
    r"|\blocale (data|files)\b|\bprofiling libraries\b",
    re.I,
)
ROLE_NAME = re.compile(r"(-(dev|doc|docs|data|common|l10n|i18n|locale|locales|examples)$)|\+")
ROLE_DOCUMENT = re.compile(
    r"This (meta)?package (contains|provides|includes|ships) (the |some )?"
    r"(development|header|documentation|api documentation|data|common|shared|"
    r"architecture[- ]independent|translation|locale|example|source for the rust)",
    re.I,
)


@dataclass(frozen=True)
class Record:
    """One summarization pair and where it came from."""

    package: str
    family: str
    document: str
    summary: str


def parse_stanzas(path: Path) -> Iterator[dict[str, str]]:
    """Yield RFC 822 stanzas as dicts; continuation lines stay in the value, newline-joined."""
    stanza: dict[str, str] = {}
    key = ""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip():
                if stanza:
                    yield stanza
                stanza, key = {}, ""
            elif line[0] in " \t" and key:
                stanza[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                stanza[key] = value.strip()
    if stanza:
        yield stanza


def read_sources(path: Path) -> dict[str, str]:
    """Map binary package name to source package name (a package is its own default)."""
    sources: dict[str, str] = {}
    for stanza in parse_stanzas(path):
        name = stanza.get("Package", "")
        source = stanza.get("Source", name).split(" ")[0]
        sources.setdefault(name, source)
    return sources


def flatten_description(long_lines: list[str]) -> str:
    """Turn Debian long-description lines into one line of plain text.

    " ." marks a paragraph break, deeper-indented lines are list items or verbatim text;
    everything is joined with single spaces, list markers ("*", "-") are kept.
    """
    words = []
    for line in long_lines:
        text = line.strip()
        if text == ".":
            continue
        words.append(text)
    return re.sub(r"\s+", " ", " ".join(words)).strip()


def family_of(source: str) -> str:
    """Group a source package with its siblings by name prefix (ceph-* -> ceph)."""
    parts = source.split("-")
    depth = ECOSYSTEM_DEPTH.get(parts[0], 1)
    return "-".join(parts[:depth])


def split_of(family: str) -> str:
    """Assign a family to a split by a stable hash: about 90/5/5."""
    bucket = int(hashlib.sha256(family.encode()).hexdigest()[:8], 16) % 100
    if bucket < 90:
        return "train"
    return "validation" if bucket < 95 else "test"


def normalize(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def drop_reason(package: str, summary: str, document: str) -> str | None:
    """Name the first filter that removes a record, or None to keep it."""
    if not summary:
        return "empty synopsis"
    if DEBUG_NAME.search(package) or DEBUG_TEXT.search(summary):
        return "debug symbols"
    if TRANSITIONAL.search(summary):
        return "transitional or dummy package"
    if ROLE_SYNOPSIS.search(summary) or (
        ROLE_NAME.search(package) and ROLE_DOCUMENT.search(document)
    ):
        return "boilerplate role package (-dev/-doc/-data/-common/... and kin)"
    if len(document.split()) < MIN_DOCUMENT_WORDS:
        return f"document under {MIN_DOCUMENT_WORDS} words"
    return None


def build_records(
    translations: Path, sources: dict[str, str]
) -> tuple[list[Record], Counter[str], int]:
    """Parse, filter and deduplicate; returns records, drop counts and the raw count."""
    raw: dict[str, tuple[str, list[str]]] = {}
    for stanza in parse_stanzas(translations):
        package = stanza.get("Package", "")
        lines = stanza.get("Description-en", "").split("\n")
        raw.setdefault(package, (lines[0].strip(), lines[1:]))
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    records = []
    for package in sorted(raw):
        summary, long_lines = raw[package]
        document = flatten_description(long_lines)
        reason = drop_reason(package, summary, document)
        key = normalize(summary) + "|" + normalize(document[:DEDUP_PREFIX_CHARS])
        if reason is None and key in seen:
            reason = "near-duplicate (same normalized synopsis + first 200 chars)"
        if reason is not None:
            dropped[reason] += 1
            continue
        seen.add(key)
        family = family_of(sources.get(package, package))
        records.append(Record(package, family, document, summary))
    return records, dropped, len(raw)


def write_jsonl_gz(path: Path, records: list[Record]) -> None:
    """Write gzip with mtime=0 and no file name so reruns are byte-identical."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as handle:
        for record in records:
            row = {
                "document": record.document,
                "summary": record.summary,
                "package": record.package,
            }
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
    path.write_bytes(buffer.getvalue())


def length_stats(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": statistics.fmean(ordered),
        "median": statistics.median(ordered),
        "p90": ordered[int(0.9 * (len(ordered) - 1))],
    }


def lead_baseline(records: list[Record], k: int) -> dict[str, float]:
    """ROUGE F1 (x100) of the first k words of each document against its synopsis."""
    predictions = lead_predictions([record.document for record in records], k)
    return rouge(predictions, [record.summary for record in records])


def release_date(release: Path | None) -> str:
    if release is None or not release.exists():
        return "unknown (no InRelease file given)"
    for line in release.read_text(errors="replace").splitlines():
        if line.startswith("Date:"):
            return line.partition(":")[2].strip()
    return "unknown"


def data_card(
    splits: dict[str, list[Record]],
    dropped: Counter[str],
    raw_count: int,
    baseline: dict[str, float],
    k: int,
    date: str,
    command: str,
) -> str:
    """Render DATA_CARD.md from `templates/data_card.md`."""
    rows = []
    for name, records in splits.items():
        doc = length_stats([len(r.document.split()) for r in records])
        summ = length_stats([len(r.summary.split()) for r in records])
        families = len({r.family for r in records})
        rows.append(
            f"| {name} | {len(records):,} | {families:,} | {doc['mean']:.1f} / {doc['median']:.0f}"
            f" / {doc['p90']} | {summ['mean']:.1f} / {summ['median']:.0f} / {summ['p90']} |"
        )
    filters = "\n".join(f"| {reason} | {count:,} |" for reason, count in dropped.most_common())
    values = {
        "date": date,
        "rows": "\n".join(rows),
        "raw_count": f"{raw_count:,}",
        "kept": f"{sum(len(r) for r in splits.values()):,}",
        "filters": filters,
        "test_pairs": f"{len(splits['test']):,}",
        "k": k,
        **{name: f"{value:.2f}" for name, value in baseline.items()},
        "command": command,
    }
    return render("data_card.md", values)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--translations", type=Path, required=True, help="Translation-en index")
    parser.add_argument("--packages", type=Path, required=True, help="binary-amd64 Packages index")
    parser.add_argument("--release", type=Path, default=None, help="InRelease, for the index date")
    parser.add_argument("--out", type=Path, default=Path("trainables/demo/data"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    records, dropped, raw_count = build_records(args.translations, read_sources(args.packages))
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for record in records:
        splits[split_of(record.family)].append(record)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, split_records in splits.items():
        write_jsonl_gz(args.out / f"{name}.jsonl.gz", split_records)
    k = lead_k([record.summary for record in splits["train"]])
    baseline = lead_baseline(splits["test"], k)
    command = "python -m scripts.make_dataset " + " ".join(
        f"--{key} {value}" for key, value in vars(args).items() if value is not None
    )
    card = data_card(splits, dropped, raw_count, baseline, k, release_date(args.release), command)
    (args.out / "DATA_CARD.md").write_text(card)
    summary: dict[str, Any] = {name: len(r) for name, r in splits.items()}
    print(json.dumps({"splits": summary, "dropped": dropped, "lead": baseline}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
