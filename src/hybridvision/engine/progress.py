"""Progress bars (rich), quiet when the output is not a terminal or on non-zero ranks."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

T = TypeVar("T")

console = Console(stderr=False)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def make_progress(enabled: bool = True) -> Progress:
    """A progress display with a free-text field ``info`` (losses, lr) after the bar."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not (enabled and is_main_process()),
        transient=not sys.stdout.isatty(),
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    with make_progress() as p:
        task = p.add_task(description, total=total, info="")
        for item in items:
            yield item
            p.advance(task)
