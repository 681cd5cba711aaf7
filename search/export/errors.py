"""The one error of `shrink-sweep export`, kept apart so that every module of the package, the
int8 loader and the CLI's error handling can raise or catch it without importing torch."""


class ExportError(ValueError):
    """The asked-for export cannot be made; the message says why and what to do."""
