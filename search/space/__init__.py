"""The space a user writes: `space.yaml` parsed into one typed `SweepConfig` (`config`, with
`params` for fixed/choice/range values and `yaml_dataclass` for the reader), the constraints on
a trial's metrics (`constraints`), and one trial's values sampled and turned into a
`TrialConfig` (`suggest`).

The bottom room of `search/` but for `console`: it imports only `trainables`' plain
dataclasses, and no Ray, torch or transformers (reading a space.yaml must stay quick).
"""
