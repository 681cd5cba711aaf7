"""ROUGE as the summarization field computes it, offline.

The numbers follow transformers' `run_summarization.py`: Google's `rouge_score` with the
Porter stemmer, F-measure averaged over examples and scaled to 0-100, label padding (-100)
replaced before decoding, and rougeLsum computed on one sentence per line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at . ! or ? followed by space and a capital, digit or opening quote/bracket,
# but not after "e.g."-style abbreviations; "v1.2 is" stays whole as no space follows the dot.
# nltk's punkt would be the usual choice (run_summarization.py uses it), but its model is a
# separate download, not available offline, and its absence would fail a sweep after training.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[A-Za-z]\.[A-Za-z]\.)\s+(?=[\"'(\[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences with a small regex (see `_SENTENCE_END`).

    Args:
        text: Any text; existing line breaks also separate sentences.

    Returns:
        The non-empty sentences, stripped.
    """
    sentences = []
    for line in text.splitlines():
        sentences.extend(s.strip() for s in _SENTENCE_END.split(line))
    return [s for s in sentences if s]


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE F-measures (x100) of predictions against one reference each.

    Unlike the hub `rouge` metric, which reports the median of bootstrap resamples, this is
    the exact mean, so the same inputs always give the same numbers.

    Args:
        predictions: Generated summaries.
        references: Reference summaries, aligned with `predictions`.

    Returns:
        `rouge1`, `rouge2`, `rougeL` and `rougeLsum`, each in [0, 100].

    Raises:
        ValueError: The two sequences differ in length or are empty.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        # rouge_score splits rougeLsum on newlines and nothing else.
        scores = scorer.score(
            "\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction))
        )
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    return {key: 100.0 * total / len(predictions) for key, total in totals.items()}
