"""What every result records besides its numbers: library versions, device, git commit; atomic writes of files and
directories."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

LIBRARIES = ("torch", "transformers", "datasets", "tokenizers", "lm_eval", "pluggy", "sds-bench")


def environment(device: str | torch.device | None = None) -> dict[str, Any]:
    """Library versions, Python, device name and suite commit: enough to say where a number came from."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    dev = torch.device(device) if device is not None else torch.device("cpu")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {"versions": versions, "python": platform.python_version(), "device": str(dev), "device_name": name,
            "torch_threads": torch.get_num_threads(), "git_commit": git_commit()}


def git_commit() -> str | None:
    """The commit of the sds-bench checkout this runs from, if it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary file beside `path`, then rename it over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # results are shared files, not mkstemp's private 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON atomically (see write_atomic)."""
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=str) + "\n"))


def write_dir_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary directory beside `path`, then rename it into place, replacing what was there only
    once the new one is complete: no partial directory, and no stale file of an old one, can exist at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = path.parent / f"{tmp.name.removesuffix('.tmp')}.old"
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # a shared directory, not mkdtemp's private 0700
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():
                os.replace(old, path)
            raise
    finally:
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)

