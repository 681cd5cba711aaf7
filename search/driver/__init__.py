"""A sweep run end to end: the checks and once-per-sweep preparation (`preflight`), the driver
that runs, resumes and closes a sweep (`sweep`), Ray Tune and Optuna wired together (`tuner`),
one trial adapted to Tune (`trainable`), the Tune callbacks that record every trial
(`callbacks`), live progress (`progress`) and the actor that takes trials' weights home
(`weights`).

May import every room below it (strategy, record, front, space, console) and `trainables`;
never `search.export` or the CLI.
"""
