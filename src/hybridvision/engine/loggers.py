"""Where training scalars go besides ``metrics.jsonl`` (``TrainConfig.logger``).

``metrics.jsonl`` is always written by the trainer and stays the source of truth (resume, plots,
studies read it); a logger only mirrors the same records elsewhere:

- ``"jsonl"``: nothing more (:class:`NullLogger`);
- ``"tensorboard"``: TensorBoard event files in ``RUN/tensorboard/`` (``tensorboard --logdir
  runs``), through ``torch.utils.tensorboard.SummaryWriter``; an optional dependency
  (``pip install 'hybridvision[tensorboard]'``). Tags are ``train/<key>`` for every numeric key of
  a training record (losses, ``lr``) and ``val/<key>`` for every metric of an evaluation, at the
  optimizer step they were logged at; a metric of -1 (COCO's "no ground truth in this size
  bucket") is left out rather than drawn as a value.

Event files are append-only streams, not written atomically: a killed run may lose its last
events, never ``metrics.jsonl``. A resumed run purges the events after its checkpoint's step
(TensorBoard's ``purge_step``), as the trainer drops the records after it from ``metrics.jsonl``.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridvision.errors import UserInputError

__all__ = ["LOGGERS", "TENSORBOARD_DIR", "NullLogger", "TensorBoardLogger", "check_logger", "make_logger"]

LOGGERS = ("jsonl", "tensorboard")
TENSORBOARD_DIR = "tensorboard"  # the event files' folder inside a run folder
INSTALL_HINT = "pip install 'hybridvision[tensorboard]'"
_NOT_SCALARS = ("epoch", "step")  # the axes, not values


def _scalars(record: Mapping[str, Any], drop_negative: bool) -> dict[str, float]:
    out = {}
    for k, v in record.items():
        if k in _NOT_SCALARS or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(float(v)) or (drop_negative and v < 0):
            continue
        out[str(k)] = float(v)
    return out


class NullLogger:
    """``logger: jsonl``: the trainer's ``metrics.jsonl`` is all; logs nothing more."""

    def log(self, record: Mapping[str, Any], step: int, split: str) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars to TensorBoard event files in ``log_dir``.

    Args:
        log_dir: the folder of the event files (``RUN/tensorboard``).
        purge_step: on resume, the first step to be written again; events at or after it from
            the interrupted run are hidden.
    """

    def __init__(self, log_dir: str | os.PathLike, *, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # absent, or installed without what it needs
            raise UserInputError(f"logger=tensorboard: TensorBoard cannot be imported ({e}); "
                                 f"{INSTALL_HINT}, or use logger=jsonl") from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def log(self, record: Mapping[str, Any], step: int, split: str) -> None:
        """Every numeric value of ``record`` as ``split/key`` at ``step`` (not epoch and step;
        on ``val``, not -1)."""
        for key, value in _scalars(record, drop_negative=split != "train").items():
            self.writer.add_scalar(f"{split}/{key}", value, global_step=int(step))
        if split != "train":  # evaluations are rare and worth seeing at once
            self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def check_logger(name: str) -> None:
    """UserInputError (one line, with the install command) when logger ``name`` cannot run here."""
    if name not in LOGGERS:
        raise UserInputError(f"logger={name}: use one of {', '.join(LOGGERS)}")
    if name == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise UserInputError(f"logger=tensorboard: the tensorboard package is not installed; "
                             f"{INSTALL_HINT}, or use logger=jsonl")


def make_logger(name: str, run_dir: str | os.PathLike, *,
                purge_step: int | None = None) -> NullLogger | TensorBoardLogger:
    """The logger ``name`` of the run in ``run_dir`` (see the module docstring)."""
    check_logger(name)
    if name == "tensorboard":
        return TensorBoardLogger(Path(run_dir) / TENSORBOARD_DIR, purge_step=purge_step)
    return NullLogger()
