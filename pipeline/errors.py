"""Errors the user can act on; the CLI prints their message, never a traceback."""


class PipelineError(Exception):
    """Base of every error whose message is meant for the user."""


class DataError(PipelineError, ValueError):
    """A data file that cannot be used; the message names file, line and column."""


class TrainingError(PipelineError):
    pass


class ExportError(PipelineError):
    """The exported ONNX model failed a check; nothing was published."""


class RegistryError(PipelineError):
    pass


class RegistryBusy(RegistryError):
    """Another writer holds the registry lock."""


class BundleError(PipelineError):
    """A version that cannot be served: missing files, bad graph, failed check."""
