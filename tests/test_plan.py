"""`shrink-sweep plan` (`search.driver.plan`): the estimate's parts on their own, then the command
on a tiny space: its lines and numbers, nothing written, and a space that cannot fit refused."""

from __future__ import annotations

import re

import pytest
import yaml
from test_sweep import shrink_sweep
from tiny import tiny_space

from search.driver import plan as planning
from search.space import suggest
from search.space.config import config_from_dict
from search.space.params import Choice, Fixed, FloatRange, IntRange
from trainables.config import RungConfig
from trainables.probe import TrialProbe


def probe(params: int, step: float, start: float = 2.0, per_pair: float = 0.1) -> TrialProbe:
    return TrialProbe(params, 16, 10**8, start, step, per_pair, per_pair / 4, 2 * 10**9)


def test_typical_values_are_the_fixed_the_first_or_the_middle():
    assert suggest.typical(Fixed(3)) == 3
    assert suggest.typical(Choice(("pseudo", "gold"))) == "pseudo"
    assert suggest.typical(IntRange(100, 301)) == 200
    assert suggest.typical(FloatRange(1e-4, 1e-2, log=True)) == pytest.approx(1e-3)


def test_asha_shares_follow_the_rule_and_fifo_runs_everything(tiny_t5_path):
    space = tiny_space(tiny_t5_path, trials=8)
    sizes, full = [1.0, 2.0, 3.0], [4.0]  # the first: point is the full model, the largest
    fifo = config_from_dict({**space, "scheduler": {"name": "fifo"}})
    assert planning.budget_shares(fifo, sizes, full) == [1.0] * 7  # the first: point apart
    asha = config_from_dict({**space, "scheduler": {"name": "asha", "reduction_factor": 3}})
    shares = planning.budget_shares(asha, sizes, full)
    assert len(shares) == 7 and all(1 / 9 <= s <= 1 for s in shares)
    # The second trial is judged against the first: point alone, which it never trails in
    # size, so it goes on; later ones face more results and are stopped more often.
    assert shares[0] == 1.0 and shares[-1] < 0.8
    alone = planning.budget_shares(asha, sizes, [])  # no first: point: 8 trials judged
    assert len(alone) == 8 and alone[0] == 1.0  # the first to report has no one to trail
    # With the screen, its picks (the three trials after the first: point) are never stopped.
    screened = config_from_dict({**space, "scheduler": {"name": "asha"}, "sampler": {"screen": 8}})
    picked = planning.budget_shares(screened, sizes, full)
    assert picked[:3] == [1.0] * 3 and min(picked[3:]) < 1.0


def test_a_trial_pays_for_its_start_steps_rungs_and_final_evaluation():
    rungs = RungConfig(steps=(11, 33), examples=50)
    full = planning.trial_time(probe(10**6, step=0.1), 100, 200, rungs, 1.0)
    assert full == pytest.approx(2.0 + 100 * 0.1 + 2 * 50 * 0.025 + 200 * 0.1)
    stopped = planning.trial_time(probe(10**6, step=0.1), 100, 200, rungs, 1 / 9)
    assert stopped == pytest.approx(2.0 + 100 / 9 * 0.1 + 50 * 0.025)  # judged once, stopped


def test_students_between_the_probes_cost_in_proportion_and_slots_share_the_trials():
    middle = planning.interpolate(probe(10**6, 0.1), probe(3 * 10**6, 0.3), 2 * 10**6)
    assert middle.step_seconds == pytest.approx(0.2) and middle.params == 2 * 10**6
    assert planning.makespan([10, 4, 4, 4], slots=2) == 12  # 10 | 4 + 4 + 4
    assert planning.makespan([5, 5, 5], slots=1) == 15


def test_plan_prints_the_estimate_and_writes_nothing(tmp_path, tiny_t5_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space(tiny_t5_path, trials=4)))
    done = shrink_sweep("plan", str(space), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # the libraries' messages (Ray's token notice) are held back
    out = done.stdout
    largest = re.search(r"largest student 4\+3 sft \(([\d.]+)M parameters\): ([\d.]+)s a step", out)
    smallest = re.search(
        r"smallest student 1\+1 sft \(([\d.]+)M parameters\): ([\d.]+)s a step", out
    )
    assert largest and smallest, out
    assert float(largest[1]) > float(smallest[1]) > 0 and float(largest[2]) > 0
    estimate = re.search(r"estimate: 4 trials, (\d) at a time, ([\d.]+) trial-hours", out)
    assert estimate and int(estimate[1]) >= 1, out
    assert "wall time" in out and "peak" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # no store, no labels


def test_a_space_whose_largest_student_cannot_fit_is_refused_by_plan_and_run(
    tmp_path, tiny_t5_path
):
    # It trains on pseudo-labels nobody has made: run would make them first, if it went on.
    train = {**tiny_space(tiny_t5_path)["train"], "targets": "pseudo"}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space(tiny_t5_path, train=train)))
    small = "resources.memory_gib=0.000001"  # 1 KiB: less than one example's step
    for command in ("plan", "run"):
        done = shrink_sweep(command, str(space), "--set", small, cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-3000:]
        refused = "the largest student, 4+3 sft, does not fit: with gradient checkpointing"
        assert refused in done.stderr and "a trial may use 1.0 KiB" in done.stderr
        assert "Traceback" not in done.stderr and "trial " not in done.stdout
        assert "pseudo-labels:" not in done.stdout  # refused before making any
        # Nothing written: no store, no pseudo-labels, no MLflow run.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"], command
