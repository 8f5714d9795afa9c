"""The toolkit's two consoles (stdout and stderr): pretty on a terminal, whole in a pipe.

Output that scripts read (model names, paths, tables, ``key: value`` lines) must come through a
pipe exactly as printed: rich, left to itself, wraps and crops at 80 columns (or ``$COLUMNS``)
when its stream is not a terminal, so ``hybridvision models | cat`` cut names to ``centernet_sma…``
and paths broke across lines. :class:`ScriptSafeConsole` therefore reports a width of
:data:`PIPE_WIDTH` columns whenever its stream is not a terminal, whatever ``$COLUMNS`` says:
text is never wrapped there, and tables take their natural width. On a terminal it behaves as
rich does (the terminal's width, colours).

Markup is off: a user's path or class name holding ``[red]`` or ``[/x]`` is printed as typed (with
markup on, the first vanished and the second raised ``MarkupError``). Styled text passes
``style=`` instead. Emoji codes (``:x:``) stay as typed too.

Under ``torchrun`` only rank 0 writes to stdout (``RANK`` other than 0 prints nothing there), so a
distributed run has one writer and one log; stderr stays open on every rank, since an error on one
rank alone must still be seen.

A leaf module: imports nothing of the package.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console, ConsoleDimensions

__all__ = ["PIPE_WIDTH", "ScriptSafeConsole", "console", "err_console"]

#: Columns reported when the stream is not a terminal: wider than any line the toolkit prints,
#: so nothing is wrapped or cropped (rich renders a table at its natural width below this).
PIPE_WIDTH = 10_000


class ScriptSafeConsole(Console):
    """A rich console that never wraps or crops when its stream is not a terminal, with markup,
    highlighting and emoji codes off (user text is printed as typed)."""

    def __init__(self, *, stderr: bool = False, **kwargs) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("highlight", False)
        kwargs.setdefault("emoji", False)
        super().__init__(stderr=stderr, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:  # checked at each print: the stream may be swapped (tests, redirects)
            return ConsoleDimensions(PIPE_WIDTH, super().size.height)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        # one writer under torchrun: the process's stdout (not a buffer a caller renders into)
        if self._file is None and not self.stderr and os.environ.get("RANK", "0") != "0":
            return
        super().print(*objects, **kwargs)


console = ScriptSafeConsole()
err_console = ScriptSafeConsole(stderr=True)
