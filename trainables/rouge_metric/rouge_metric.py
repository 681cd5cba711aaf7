"""ROUGE as an offline `evaluate` metric: `evaluate.load("<this dir or file>")`.

The hub's `rouge` metric cannot be loaded without network access and needs nltk's punkt data
for rougeLsum. This module has the same structure (an `evaluate.Metric` with `_info` and
`_compute`) but delegates to `trainables.rouge.rouge_scores`, so a sweep and any user code
that goes through `evaluate` report identical numbers (mean F-measure x 100).
"""

import datasets
import evaluate

from trainables.rouge import rouge_scores

_DESCRIPTION = """\
ROUGE F-measures (rouge1, rouge2, rougeL, rougeLsum) as mean percentages over examples,
computed with Google's rouge_score package, the Porter stemmer, and rougeLsum on one sentence
per line (sentences split by a small regex, so no nltk data is needed).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated summaries.
    references: list of reference summaries, one per prediction.
Returns:
    rouge1, rouge2, rougeL, rougeLsum: mean F-measure x 100.
Examples:
    >>> rouge = evaluate.load("trainables/rouge_metric")
    >>> rouge.compute(predictions=["hello there"], references=["hello there"])
    {'rouge1': 100.0, 'rouge2': 100.0, 'rougeL': 100.0, 'rougeLsum': 100.0}
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeMetric(evaluate.Metric):
    """ROUGE with the exact semantics of `trainables.rouge.rouge_scores`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Value("string", id="sequence"),
                }
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return rouge_scores(predictions, references)
