"""Repo tools that rebuild the demo dataset and teacher; run them as modules from the repo
root (`python -m scripts.make_dataset`, `python -m scripts.train_teacher`,
`python -m scripts.eval_teacher`). Not part of the installed package."""
