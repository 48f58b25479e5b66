"""Public access to run directories: ``rlaif.runs.load(dir)`` returns a ``datasets.Dataset``."""

from plumbing.runs import RunError, load, load_all, read_errors, read_manifest, splits

__all__ = ["RunError", "load", "load_all", "read_errors", "read_manifest", "splits"]
