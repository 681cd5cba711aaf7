"""`shrink-sweep export`: pick one trial of a sweep and ship it as a model directory, proved.

One module per job, arrows pointing down the list:

- `ship`: the export itself (`export_trial`): stage, build, re-score, card, publish, register.
- `card`: the model card (from the template `card.md`) and the lines the CLI prints.
- `results`: what an export wrote and measured (`ExportResult`), made by `ship`, read by `card`.
- `pick`: which trial to export (`pick_trial`): the knee of the front or a rule. Pure.
- `model_dir`: the fp32 Hugging Face directory, and the check that it generates.
- `int8`: quantize, save and load the int8 variant; stands alone, so loading needs no exporter.
- `staging`: build in a hidden sibling directory, rename into place only when all went well.
- `summarization_pipeline`: copied into every export; imports only transformers.
- `errors`: `ExportError`, the one error of the package.

An export directory holds a plain Hugging Face model directory and:

- `summarization_pipeline.py`, named in config.json's `custom_pipelines`: transformers 5
  removed its summarization pipeline, so `pipeline("summarization", model=DIR,
  trust_remote_code=True)` runs this short one (tokenize, `generate`, decode);
- `int8/`: the model with int8 weights (PyTorch dynamic quantization), read by
  `search.export.int8.load_int8`;
- `README.md`: the model card.

Importing this package imports no torch; import the module that holds what you need. It may
use `search.front` (the rows it picks from), `search.space` (the sweep's configuration) and
`search.console`; never the driver: an export needs no Ray. MLflow is reached through the
`Tracker` (`search.record`) the CLI passes.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # Model cards and quantization notes written before the package was split say
    # `from search.export import load_int8`; keep that working without importing torch here.
    if name == "load_int8":
        from search.export.int8 import load_int8

        return load_int8
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
