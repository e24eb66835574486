"""Peak memory of one process for the benchmarks: CUDA's allocator peak, or on the CPU the kernel's peak RSS (VmHWM),
which Linux lets a process reset (/proc/self/clear_refs) so a measurement covers only the work after the reset."""

from __future__ import annotations

import torch


def reset(device: torch.device) -> float:
    """Restart the peak counter at the current usage; return that usage in MiB."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") / 1024


def peak_mib(device: torch.device) -> float:
    """The peak usage in MiB since the last reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _status_kib("VmHWM") / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
