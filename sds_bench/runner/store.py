"""The results store of a suite: one JSON line per finished cell in ``<results>/<suite>/rows.jsonl``.

A row is appended with one ``os.write`` of the whole line to an ``O_APPEND`` file and fsynced, so a sweep killed at
any moment leaves every finished row intact and at worst one truncated last line, which reading skips and the next
append closes off. Rows are never rewritten: a retried cell appends a new row, and the latest row of a key wins
(a successful row over a failed one).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

OK, FAILED = "ok", "failed"


class Store:
    """The rows of one suite's results directory."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.path = self.dir / "rows.jsonl"

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row in file order; a line cut short by a killed writer is skipped."""
        if not self.path.is_file():
            return []
        rows = []
        lines = self.path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):  # a line closed off after its writer died, not the file's unfinished end
                    warnings.warn(f"{self.path}:{number}: skipping a line that is not a complete JSON row", stacklevel=2)
        return rows

    def latest(self) -> dict[str, dict[str, Any]]:
        """The row that stands for each cell key: its last successful row, else its last failed one."""
        best: dict[str, dict[str, Any]] = {}
        for row in self.rows():
            if row.get("status") == OK or best.get(row["key"], {}).get("status") != OK:
                best[row["key"]] = row
        return best

    def completed(self) -> set[str]:
        """Keys of the cells that have a successful row (a re-run skips them; failed cells run again)."""
        return {key for key, row in self.latest().items() if row["status"] == OK}

    def append(self, row: dict[str, Any]) -> None:
        """Append one row atomically: a single write of the full line to an O_APPEND file, then fsync."""
        line = (json.dumps(row, default=str, allow_nan=True) + "\n").encode()
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a writer died mid-line: keep that line apart
                line = b"\n" + line
            if os.write(fd, line) != len(line):
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        finally:
            os.close(fd)

    def archive(self) -> Path | None:
        """Start an empty store, keeping the current rows as rows.<UTC time>.jsonl beside it (nothing is deleted)."""
        if not self.path.is_file():
            return None
        kept = self.dir / f"rows.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"
        os.replace(self.path, kept)
        return kept
