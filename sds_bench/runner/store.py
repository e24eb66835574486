"""The results store of a suite: one JSON line per finished cell in ``<results>/<suite>/rows.jsonl``.

A row is appended with one ``os.write`` of the whole line to an ``O_APPEND`` file and fsynced, so a sweep killed at
any moment leaves every finished row intact and at worst one truncated last line. The writer holds ``run.lock``
(an flock, with its pid, host and start time inside) while it works, so one results directory has one writer; on
taking it, the writer moves any line that is not a complete row to ``rows.torn.jsonl`` (one warning, once) and the
cells of those lines run again. Complete rows are never changed: a retried cell appends a new row, and the latest
row of a key wins (a successful row over a failed one; a row whose metrics are not finite counts as failed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sds_bench.errors import UserError

OK, FAILED = "ok", "failed"
log = logging.getLogger(__name__)


class Store:
    """The rows of one suite's results directory."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.path = self.dir / "rows.jsonl"
        self.torn = self.dir / "rows.torn.jsonl"

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row in file order; a line cut short by a killed writer is skipped (the next writer moves
        it aside)."""
        return [row for _, row in self._lines() if row is not None] if self.path.is_file() else []

    def _lines(self, data: bytes | None = None) -> list[tuple[bytes, dict[str, Any] | None]]:
        """Each non-empty line of the file (or of `data`) with its row, None where it is not a complete JSON row."""
        out = []
        for line in (self.path.read_bytes() if data is None else data).split(b"\n"):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                out.append((line, row if isinstance(row, dict) and "key" in row else None))
        return out

    def latest(self) -> dict[str, dict[str, Any]]:
        """The row that stands for each cell key: its last successful row, else its last failed one."""
        best: dict[str, dict[str, Any]] = {}
        for row in self.rows():
            if _ok(row) or not _ok(best.get(row["key"], {})):
                best[row["key"]] = row
        return best

    def completed(self) -> set[str]:
        """Keys of the cells that have a successful row (a re-run skips them; failed cells run again)."""
        return {key for key, row in self.latest().items() if _ok(row)}

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Be this directory's one writer while the block runs: hold run.lock (refused in one line, naming the holder,
        while another process holds it), then set aside the lines a killed writer left incomplete."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a file in the way, no permission
            raise UserError(f"results directory {self.dir} cannot be written: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.dir} is in use by another sds-bench run ({holder}); wait for it to finish "
                            "or give another --results") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{datetime.now(UTC).isoformat(timespec='seconds')}\n".encode(), 0)
            self._set_aside_torn_lines()
            yield
        finally:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the flock

    def _set_aside_torn_lines(self) -> None:
        """Move every line that is not a complete row to rows.torn.jsonl, with one warning; their cells run again."""
        data = self.path.read_bytes() if self.path.is_file() else b""
        lines = self._lines(data)
        torn = [line for line, row in lines if row is None]
        if not torn and (not data or data.endswith(b"\n")):
            return
        if torn:
            with open(self.torn, "ab") as f:
                f.write(b"".join(line + b"\n" for line in torn))
                f.flush()
                os.fsync(f.fileno())
        kept = self.path.with_suffix(".jsonl.tmp")
        kept.write_bytes(b"".join(line + b"\n" for line, row in lines if row is not None))
        os.replace(kept, self.path)
        if torn:
            log.warning(f"sds-bench: warning: {self.path}: moved {len(torn)} incomplete line(s), left by a killed "
                        f"writer, to {self.torn.name}; their cells run again")

    def append(self, row: dict[str, Any]) -> None:
        """Append one row atomically (a single write of the full line to an O_APPEND file, then fsync); a writer
        holds `lock`."""
        line = (json.dumps(row, default=str, allow_nan=True) + "\n").encode()
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
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


def _ok(row: dict[str, Any]) -> bool:
    """A successful row whose metrics are all finite (a NaN or infinite metric is never a result)."""
    return row.get("status") == OK and all(isinstance(v, (int, float)) and math.isfinite(v)
                                           for v in row.get("metrics", {}).values())
