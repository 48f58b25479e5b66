"""The pipeline's one error type, below every pipeline module (pipeline/root.py re-exports it)."""


class PipelineError(ValueError):
    """A pipeline recipe or root that cannot be used; the message names the key or folder and the fix."""
