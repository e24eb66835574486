"""The 2:4 benchmark as one run on one GPU: every per-shape kernel cell (`linear`) and, when planned, the whole-model
prefill and decode workloads (`e2e`), written beside the timing protocol and the environment (`report`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from sds_bench.errors import at_least
from sds_bench.kernels import report
from sds_bench.kernels.e2e import E2E_TOLERANCE, bench_e2e
from sds_bench.kernels.gpu import gpu_info
from sds_bench.kernels.linear import TOLERANCE, bench_kernels
from sds_bench.kernels.plan import Plan
from sds_bench.record import environment

MIN_REPS = 3
"""Timed repetitions a measurement needs for a median and a spread."""


def run(plan: Plan, out_dir: str, device: str | None = None, warmup: int = 5, reps: int = 30, graph: bool = True,
        peak_tflops: float | None = None, quiet: bool = False) -> dict[str, Any]:
    """Time the plan (and the end-to-end workloads), write the tables and the plot; return the written paths."""
    at_least("reps", reps, MIN_REPS)
    if plan.e2e:
        at_least("e2e reps", plan.e2e.reps, MIN_REPS)
    dev = torch.device(device or "cuda")
    gpu = gpu_info(dev, peak_tflops)
    kernels = bench_kernels(plan, dev, gpu, warmup, reps, graph, quiet)
    e2e_rows = bench_e2e(plan, dev, warmup, quiet) if plan.e2e else []
    protocol = {"warmup": warmup, "reps": reps, "timing": "graph" if graph else "eager", "tolerance": TOLERANCE,
                "e2e": None if plan.e2e is None else {**asdict(plan.e2e), "tolerance": E2E_TOLERANCE}}
    meta = {"gpu": gpu, "protocol": protocol, "plan": asdict(plan), "environment": environment(dev)}
    return report.write_results(out_dir, meta, kernels, e2e_rows)
