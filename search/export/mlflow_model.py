"""The MLflow model of an export: a pyfunc that summarizes with the exported model directory.

MLflow keeps this file as the logged model's code ("models from code") and runs it whenever the
model is loaded (`mlflow.pyfunc.load_model`, `mlflow models serve`), with the export directory
as the artifact `model_dir`. It needs mlflow, transformers and torch, never shrink-sweep: it
summarizes through the directory's own shipped pipeline (`summarization_pipeline.py`), as
`pipeline("summarization", model=DIR, trust_remote_code=True)` does for a user.

Texts in, one summary per text out: `predict(["a text", ...])`, or a DataFrame whose one
column holds the texts (as `mlflow models serve` hands over `dataframe_split` or `inputs`).
"""

from mlflow.models import set_model
from mlflow.pyfunc import PythonModel
from transformers import pipeline

MODEL_DIR = "model_dir"  # the artifact: the exported Hugging Face model directory


class Summarizer(PythonModel):
    """The export's summarization pipeline behind MLflow's pyfunc interface."""

    def load_context(self, context):
        self.summarize = pipeline(
            "summarization", model=context.artifacts[MODEL_DIR], trust_remote_code=True
        )

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        # The type hints are the signature: MLflow checks and converts the input to a list.
        return [result["summary_text"] for result in self.summarize(list(model_input))]


set_model(Summarizer())
