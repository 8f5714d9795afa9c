"""Ctrl-C while the ``hybridvision`` command starts: held, then a clean exit 130.

The command spends its first seconds importing torch, scipy and the package; an interrupt there
raised ``KeyboardInterrupt`` through some library's import (a traceback) or, inside torch's native
start-up, aborted the process. :func:`hold` (called by the package's ``__init__`` when the
process is the ``hybridvision`` command) records a Ctrl-C instead of raising it; :func:`release`
(the first thing ``cli.main`` does, once every import is done) restores Python's handler and ends
the command with ``interrupted`` and exit code 130 when one came. A program that imports the
package is not touched.

A leaf module: imports nothing of the package.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["hold", "release", "is_command"]

_held: list[int] = []
_previous: list = []


def is_command() -> bool:
    """Whether this process is the ``hybridvision`` command, in its main thread, with Ctrl-C not
    ignored (a background job started with ``nohup`` or ``&`` keeps ignoring it)."""
    name = os.path.basename(sys.argv[0] if sys.argv else "")
    return (name in ("hybridvision", "hybridvision.exe")
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)


def hold() -> None:
    """From now until :func:`release`, a Ctrl-C is recorded, not raised."""
    if not _previous:
        _previous.append(signal.signal(signal.SIGINT, lambda *_: _held.append(1)))


def release() -> None:
    """Restore Python's Ctrl-C handling; exit 130 with ``interrupted`` if a Ctrl-C came while held."""
    if _previous:
        signal.signal(signal.SIGINT, _previous.pop())
    if _held:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130)
