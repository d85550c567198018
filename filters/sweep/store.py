"""One small JSON file per finished cell, written atomically: what makes a sweep resumable."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

from .cells import Cell

__all__ = ["CellStore"]


class CellStore:
    """The ``cells/`` folder of a sweep's output: ``<key>.json`` per finished cell.

    A file is written to a temporary name in the same folder and renamed into
    place (atomic on POSIX), so a sweep killed at any moment leaves every
    finished cell whole and no half-written one; a cell with a file counts as
    done.

    Parameters
    ----------
    out : str or PathLike
        The sweep's output folder (created if needed).

    Examples
    --------
    >>> import tempfile
    >>> store = CellStore(tempfile.mkdtemp())
    >>> cell = Cell("setting", {"seed": 0}, (0,), {"seed": 0})
    >>> store.has(cell)
    False
    >>> store.write(cell, {"status": "ok", "rmse_analysis": 0.5})
    >>> store.has(cell), store.read(cell)["rmse_analysis"]
    (True, 0.5)
    """

    def __init__(self, out):
        self.out = pathlib.Path(out)
        self.folder = self.out / "cells"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, cell: Cell) -> pathlib.Path:
        """The file of ``cell``."""
        return self.folder / f"{cell.key}.json"

    def has(self, cell: Cell) -> bool:
        """Whether ``cell`` is finished (its file exists)."""
        return self.path(cell).is_file()

    def write(self, cell: Cell, result: dict) -> None:
        """Write the result of ``cell`` at once (temporary file, then rename).

        Parameters
        ----------
        cell : Cell
        result : dict
            JSON-serialisable (NaN allowed).
        """
        record = {"key": cell.key, "kind": cell.kind, "coords": cell.coords,
                  "payload": cell.payload, "result": result}
        fd, tmp = tempfile.mkstemp(prefix=f".{cell.key}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, sort_keys=True)
            os.replace(tmp, self.path(cell))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def read(self, cell: Cell) -> dict | None:
        """The stored result of ``cell``, or None when it has none.

        Parameters
        ----------
        cell : Cell

        Returns
        -------
        dict or None
        """
        p = self.path(cell)
        if not p.is_file():
            return None
        return json.loads(p.read_text(encoding="utf-8"))["result"]

    def keys(self) -> set:
        """The keys of every stored cell."""
        return {p.stem for p in self.folder.glob("*.json")}
