"""The GPU the 2:4 benchmark runs on: whether it can time 2:4 at all, and what its numbers are measured on."""

from __future__ import annotations

import platform
import re
import subprocess
from typing import Any

import torch

# Dense fp16/bf16 tensor-core peak (fp32 accumulate, no sparsity) in TFLOP/s, from NVIDIA's datasheets; first match wins.
PEAK_TFLOPS = ((r"H100.*NVL", 835.5), (r"H100.*PCIe", 756.5), (r"\bH100\b|\bGH200\b", 989.4),
               (r"H200.*NVL", 835.5), (r"\bH200\b", 989.4), (r"\bA100\b", 312.0), (r"\bL40S\b", 362.1),
               (r"\bL40\b", 181.0), (r"\bL4\b", 121.0), (r"RTX 4090", 165.2))


def gpu_problem(device: str | None = None) -> str | None:
    """Why 2:4 cannot be timed here (no CUDA GPU, or one older than compute capability 8.0), or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU found; 2:4 sparse tensor cores need compute capability 8.0 or newer"
    dev = torch.device(device or "cuda")
    if dev.type != "cuda":
        return f"device {device!r} is not a CUDA GPU; 2:4 sparse tensor cores need one of compute capability >= 8.0"
    if (dev.index or 0) >= torch.cuda.device_count():
        return f"there is no {device}; this machine has {torch.cuda.device_count()} CUDA GPU(s)"
    major, minor = torch.cuda.get_device_capability(dev)
    if major < 8:
        return (f"{torch.cuda.get_device_name(dev)} has compute capability {major}.{minor}; "
                "2:4 sparse tensor cores need 8.0 or newer")
    return None


def gpu_info(device: torch.device, peak_tflops: float | None = None) -> dict[str, Any]:
    """Where the numbers come from: GPU, capability, driver, torch, CUDA and cuSPARSELt versions, dense peak."""
    props = torch.cuda.get_device_properties(device)
    version = torch.backends.cusparselt.version() if torch.backends.cusparselt.is_available() else None
    return {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "driver": _driver_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cusparselt": f"{version // 1000}.{version // 100 % 10}.{version % 100}" if version else None,
            "peak_tflops": peak_tflops or next((p for pat, p in PEAK_TFLOPS if re.search(pat, props.name)), None),
            "l2_bytes": props.L2_cache_size, "python": platform.python_version()}


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
