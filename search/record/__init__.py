"""The sweep's record, the one room that talks to MLflow: the store and the links to it
(`store`), what a sweep's record shares (`runs`), the sweep's parent run (`tracker.Tracker`),
its trial runs (`trials`), its exported models (`models`), the front as logged as trials end
(`front_log`), and the store's layout on disk (`paths`).

May import `search.front` and `search.space`; no Ray, torch or transformers, so that reading a
store (`shrink-sweep pareto`) stays quick.
"""
