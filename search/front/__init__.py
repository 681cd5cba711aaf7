"""The Pareto front: fronts, hypervolume and the knee in pure numpy (`pareto`, checked against
Optuna's own), the sweep's front as rows with its CSV and reference point (`rows`), and the
interactive plotly figure (`plot`).

May import `search.space`; numpy and plotly only: no MLflow (the front as logged is
`search.record.front_log`), no Ray, no torch.
"""
