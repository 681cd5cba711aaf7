"""The sweep driver and everything above one trial, in rooms whose imports point down
(`lint-imports` checks it; pyproject.toml states the layers):

- `cli`: the `shrink-sweep` command, a thin map from command names to functions; on top.
- `export/`: `shrink-sweep export`, one trial shipped as a model directory, proved.
- `driver/`: a sweep run end to end: checks and preparation, Ray Tune and Optuna, the Tune
  callbacks that record it, live progress.
- `strategy/`: who is trained next and who is stopped: the searcher, the zero-shot screen,
  repeats, successive halving and the early-stopping schedulers.
- `record/`: the sweep in MLflow and on disk: the store, the sweep's and trials' runs, exported
  models, the front as logged, the store's layout.
- `front/`: the Pareto front: pure numpy math, the front as rows, the plotly figure.
- `space/`: the space a user writes: `space.yaml` into typed config, its parameters and
  constraints, one trial's values.
- `console`: the lines a command prints; under everything, since every command prints.

`trainables/` (what one trial does) sits below all of them and never imports `search`.
"""
