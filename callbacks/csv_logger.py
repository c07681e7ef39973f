"""``CSVLogger``: the epoch table of every fit, written to a CSV file on global rank 0."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

from bridge.callback import Callback
from bridge.distributed import atomic_write_text, is_global_zero

from .recorder import format_time

__all__ = ["CSVLogger"]


def _cell(v: Any) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _last_header(text: str) -> list[str] | None:
    """The last header line (first cell ``epoch``) of an existing log, if any."""
    header = None
    for row in csv.reader(io.StringIO(text)):
        if row and row[0] == "epoch":
            header = row
    return header


def _parse(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


class CSVLogger(Callback):
    """Write ``learn.recorder``'s epoch rows to ``learn.path/fname`` (fastai's ``CSVLogger``).

    The header is ``learn.recorder.metric_names`` (``epoch, train_loss, valid_loss, *metrics,
    time``), then one row per epoch. After each epoch the whole file is rewritten through
    ``atomic_write_text`` (temp file + rename, fsynced), so it is always complete and
    readable, even after a crash mid-write. With ``append=True`` the rows go after the
    file's existing content (the header is repeated only if it changed, whereas fastai
    always repeats it). Only global rank 0 writes: one row per epoch, not per rank. The
    rows are kept in checkpoints, so a resumed fit rewrites the complete history.

    ``read_log()`` returns a ``pandas.DataFrame`` when pandas is installed (as fastai),
    else a list of dicts (one per row, numbers parsed as int/float). Inactive in
    ``validate``/``get_preds`` and inside the lr finder.

    Example:
        >>> cb = CSVLogger("history.csv")
        >>> learn.fit(2, cbs=cb)  # doctest: +ELLIPSIS
        epoch ...
        >>> (learn.path / "history.csv").read_text().splitlines()[0]
        'epoch,train_loss,valid_loss,time'
        >>> len(cb.read_log())
        2
    """

    order = 60

    def __init__(self, fname: str | os.PathLike[str] = "history.csv", append: bool = False) -> None:
        name = str(fname) if isinstance(fname, (str, os.PathLike)) else ""
        if not name or name.endswith(("/", os.sep)) or os.path.basename(name) in ("", ".", "..") or "\x00" in name:
            raise TypeError(
                f"CSVLogger: `fname` must be a non-empty file name (str or path, no NUL character, not a folder), "
                f"got {fname!r}"
            )
        if not isinstance(append, bool):
            raise TypeError(f"CSVLogger: `append` must be a bool, got {append!r}")
        self.fname, self.append = Path(fname), append
        self.rows: list[list[str]] = []
        self._prefix = ""
        self._header: list[str] = []
        self._start = 0.0

    @property
    def file_path(self) -> Path:
        """Where the log is written: ``learn.path / fname`` (``fname`` itself if absolute).

        Example:
            >>> str(CSVLogger("/tmp/h.csv").file_path)
            '/tmp/h.csv'
        """
        if self.fname.is_absolute() or self.learn is None:
            return self.fname
        return Path(self.learn.path) / self.fname

    def before_fit(self) -> None:
        learn = self.learn
        self.run = learn.in_fit
        if not self.run:
            return
        self._header = list(learn.recorder.metric_names)  # type: ignore[attr-defined]
        self.rows = []
        self._prefix = ""
        path = self.file_path
        if self.append and is_global_zero() and path.exists():
            self._prefix = path.read_text(encoding="utf-8")
            if self._prefix and not self._prefix.endswith("\n"):
                self._prefix += "\n"
        self._write()

    def before_epoch(self) -> None:
        self._start = time.time()

    def after_epoch(self) -> None:
        learn = self.learn
        row: list[Any] = [learn.epoch, *learn.recorder.full_values[-1]]  # type: ignore[attr-defined]
        if len(self._header) > len(row):  # the Recorder's time column
            row.append(format_time(time.time() - self._start))
        self.rows.append([_cell(v) for v in row])
        self._write()

    def _write(self) -> None:
        if not is_global_zero() or not self._header:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if _last_header(self._prefix) != self._header:
            writer.writerow(self._header)
        writer.writerows(self.rows)
        atomic_write_text(self._prefix + buf.getvalue(), self.file_path)

    def after_fit(self) -> None:
        self.run = True

    def read_log(self) -> Any:
        """The log as a ``pandas.DataFrame`` (pandas installed) or a list of dicts.

        Example:
            >>> cb = CSVLogger()
            >>> with learn.no_logging():
            ...     learn.fit(1, cbs=cb)
            >>> log = cb.read_log()
            >>> round(float(log["valid_loss"][0]), 6) == round(learn.recorder.values[0][1], 6)
            True
        """
        path = self.file_path
        try:
            import pandas as pd
        except ImportError:
            with open(path, newline="", encoding="utf-8") as f:
                return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
        return pd.read_csv(path)

    def state_dict(self) -> dict[str, Any]:
        """The rows written so far (strings) and, with ``append``, the file's earlier content.

        Example:
            >>> CSVLogger().state_dict()
            {'rows': [], 'prefix': ''}
        """
        return {"rows": [list(r) for r in self.rows], "prefix": self._prefix}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Example:
            >>> cb = CSVLogger(); cb.load_state_dict({"rows": [["0", "0.5"]]}); cb.rows
            [['0', '0.5']]
        """
        self.rows = [list(r) for r in state.get("rows", [])]
        self._prefix = str(state.get("prefix", ""))
        self._write()
