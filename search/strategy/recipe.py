"""What the students learn from, for `train.targets: auto`: the base model's own summaries
(pseudo-labels) where it summarizes the user's data well, the data's gold summaries where not.

The SFT paper's pseudo-labels came from a teacher fine-tuned on the same data. On the demo the
teacher was (its summaries make every student 2-5 ROUGE-L points better than the gold ones);
on data it never saw, its summaries teach its mistakes (bench/README.md, "Recipe on a second
domain"). Which case a sweep is in shows before any student trains: the base model's own
summaries of the evaluation split (`trainables.teacher.TeacherScore`) against what the full
model reaches after a short fine-tune on the gold summaries (`trainables.teacher.gold_probe`),
both scored as every trial is. A teacher that a short gold fine-tune does not clearly beat
knows this data: its summaries are the easier, consistent target. One that it beats does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The gold probe's budget: this share of the sweep's steps, asha's first rung by default (56 of
# 500). On the demo it already sits 0.2 points below the teacher, on the second domain 4.3
# above it (at 1/3 of the budget: 1.2 below, 6.9 above, for three times the cost).
PROBE_SHARE = 1 / 9
# ROUGE-L points the gold probe must beat the teacher's own summaries by for gold to win: two
# standard errors of a paired difference on 200 evaluation pairs, about, so that noise alone
# does not flip a teacher that knows the data (bench/README.md, "Recipe on a second domain").
MARGIN = 2.0


@dataclass(frozen=True)
class RecipeChoice:
    """The targets `auto` chose, and the two scores it chose by."""

    targets: str  # "pseudo" or "gold"
    teacher_rougeL: float  # the base model's own summaries of the evaluation split
    gold_rougeL: float  # the full model after `probe_steps` steps on the gold summaries
    probe_steps: int

    def reason(self) -> str:
        """Why, in words, e.g. for the sweep's first lines and its MLflow tag."""
        told = (
            f"the teacher's own summaries score ROUGE-L {self.teacher_rougeL:.2f}, the full "
            f"model after {self.probe_steps} steps on the gold ones {self.gold_rougeL:.2f}"
        )
        if self.targets == "gold":
            return f"gold: {told}; the teacher does not know this data"
        return f"pseudo: {told}; the teacher's summaries are the easier target"


def probe_steps(max_steps: int) -> int:
    """The gold probe's steps for a sweep whose trials train `max_steps`."""
    return max(1, math.ceil(PROBE_SHARE * max_steps))


def choose_targets(teacher_rougeL: float, gold_rougeL: float, steps: int) -> RecipeChoice:
    """Gold if the gold probe beats the teacher's own summaries by more than `MARGIN`, else
    pseudo."""
    targets = "gold" if gold_rougeL > teacher_rougeL + MARGIN else "pseudo"
    return RecipeChoice(targets, teacher_rougeL, gold_rougeL, steps)
