"""The search strategy, who is trained next and who is stopped: Optuna's searcher taught
pruning, constraints and repeats (`searcher`), the zero-shot screen's picks (`screen`), a
repeated proposal answered from its record (`repeats`), successive halving for several
objectives as a pure rule (`halving`) and the Ray Tune schedulers built on it
(`early_stopping`).

May import `search.front`, `search.space` and `trainables`; not the record (the driver tells
it what it needs) nor the driver. The simulator (`bench/simulate.py`) runs these same rules.
"""
