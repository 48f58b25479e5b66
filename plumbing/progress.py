"""Progress bars for long stages (rich, on stderr), silenced by ``--quiet``. CLI layer only."""

from __future__ import annotations

import sys


class StageProgress:
    """``progress(done, total)`` callback for a stage, drawn as one rich bar with items/s and ETA.

    The bar appears on the first report, which stages send after validating their input: a
    stage that fails on bad input prints its one-line error and nothing else.
    """

    def __init__(self, description: str, unit: str = "items", quiet: bool = False):
        self.description, self.unit, self.quiet = description, unit, quiet
        self._bar = None
        self._task = None

    def __enter__(self) -> StageProgress:
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or total <= 0:
            return
        if self._bar is None:
            self._bar = self._make_bar()
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=total)
        self._bar.update(self._task, completed=done, total=total)

    def _make_bar(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        unit = self.unit

        class Rate(ProgressColumn):
            def render(self, task) -> Text:
                speed = task.finished_speed or task.speed
                return Text("" if speed is None else f"{speed:.2f} {unit}/s")

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                        Rate(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=Console(file=sys.stderr))

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
