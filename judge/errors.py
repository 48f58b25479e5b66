"""Errors of the judge layer that a user can fix (bad input, wrong run, bad settings)."""

from __future__ import annotations


class JudgeError(ValueError):
    """Bad input to a judge command; the message says what, where and how to fix it.

    A ``ValueError`` so that ``rlaif.cli.main`` prints it as one line on stderr (exit 2).
    Infrastructure failures (a server down) are ``EngineError`` instead, never this.
    """
