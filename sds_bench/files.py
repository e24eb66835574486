"""The user's files read with one-line errors naming the file, the line and the cause: text, JSON, JSON Lines
(gzip'd or not), and token arrays (.pt, .npy) loaded without running any pickled code."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sds_bench.errors import UserError, first_line

TORCH_ZIP, PICKLE, NUMPY = b"PK\x03\x04", b"\x80", b"\x93NUMPY"
"""Leading bytes of torch.save's zip format, of its legacy pickle format, and of a .npy file."""


def read_text(path: str | Path, what: str = "data file") -> str:
    """The UTF-8 text of `path` (gunzipped when it ends in .gz)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {str(path)!r} is not UTF-8 text (byte {e.start})") from None
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{what} {str(path)!r} is not a readable gzip file ({first_line(e)})") from None


def read_json(path: str | Path, what: str = "data file") -> Any:
    """The JSON value `path` holds."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {str(path)!r} is not valid JSON (line {e.lineno}: {e.msg})") from None


def read_json_strings(path: str | Path, what: str = "data file") -> list[str]:
    """A JSON list of strings (the hub's rows of one text column, as a list)."""
    rows = read_json(path, what)
    if not isinstance(rows, list) or not all(isinstance(r, str) for r in rows):
        found = type(rows).__name__ if not isinstance(rows, list) else "a list holding non-strings"
        raise UserError(f"{what} {str(path)!r} must hold a JSON list of strings; found {found}")
    return rows


def read_jsonl(path: str | Path, field: str = "text", what: str = "data file") -> list[str]:
    """The string `field` of each row of a JSON Lines file (gzip'd as the hub stores C4 when it ends in .gz)."""
    rows = []
    for n, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{what} {str(path)!r}: line {n} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{what} {str(path)!r}: line {n} is not a JSON object")
        if not isinstance(row.get(field), str):
            raise UserError(f"{what} {str(path)!r}: line {n} has no string field {field!r}")
        rows.append(row[field])
    return rows


def read_token_array(path: str | Path) -> Any:
    """What a .pt (torch.save, tensors only) or .npy (no object arrays, as a tensor) token file holds, never
    unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"calibration file {str(path)!r} does not exist")
    head = path.read_bytes()[:8]
    if path.suffix == ".npy":
        if not head.startswith(NUMPY):
            raise UserError(f"token file {str(path)!r} is not a .npy file (save one with numpy.save)")
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (ValueError, TypeError) as e:  # object arrays (ValueError), strings and other non-numbers (TypeError)
            raise UserError(f"token file {str(path)!r} holds objects or text, not numbers ({first_line(e)})") from None
    if not head.startswith((TORCH_ZIP, PICKLE)):
        raise UserError(f"token file {str(path)!r} is not a file torch.save wrote")
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or others for the same fault
        if "Weights only load failed" in str(e):
            raise UserError(f"token file {str(path)!r} holds Python objects besides tensors, which cannot be "
                            "loaded safely; save a plain int64 tensor") from None
        raise UserError(f"token file {str(path)!r} cannot be read ({first_line(e)})") from None
