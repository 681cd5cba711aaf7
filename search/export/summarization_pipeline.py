"""The `summarization` pipeline of this model directory, by shrink-sweep.

transformers 5 removed its summarization pipeline; config.json names this one under
`custom_pipelines`, so `pipeline("summarization", model=DIR, trust_remote_code=True)` runs it.
It decodes with generation_config.json unless a call passes generation arguments.
"""

from transformers import Pipeline


class SummarizationPipeline(Pipeline):
    """Text in, `[{"summary_text": ...}]` out, as the transformers 4 pipeline answered."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False
    _pipeline_calls_generate = True

    def __call__(self, inputs, **kwargs):
        results = super().__call__(inputs, **kwargs)
        return results if isinstance(inputs, str) else [result[0] for result in results]

    def _sanitize_parameters(self, truncation=None, **generate_kwargs):
        preprocess = {} if truncation is None else {"truncation": truncation}
        return preprocess, generate_kwargs, {}

    def preprocess(self, text, truncation=True):
        text = (self.prefix or "") + text
        return self.tokenizer(text, truncation=truncation, return_tensors="pt")

    def _forward(self, inputs, **generate_kwargs):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        return {"output_ids": self.model.generate(**inputs, **generate_kwargs)}

    def postprocess(self, outputs):
        text = self.tokenizer.decode(outputs["output_ids"][0], skip_special_tokens=True)
        return [{"summary_text": text.strip()}]
