"""How the 2:4 benchmark times: CUDA events around back-to-back calls (optionally a CUDA graph), median and spread."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch


def time_calls(calls: list[Callable[[], Any]], warmup: int, reps: int, graph: bool) -> list[float]:
    """Milliseconds per call of `reps` repetitions, each running all `calls` back to back between two CUDA events."""
    def run() -> None:
        for call in calls:
            call()

    step = _graph_replay(run) if graph else run
    for _ in range(warmup):
        step()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        step()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / len(calls) for start, end in events]


def _graph_replay(run: Callable[[], None]) -> Callable[[], None]:
    """Capture `run` in a CUDA graph (after a warm-up on a side stream, as capture requires); return its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def median_spread(times: list[float]) -> tuple[float, float]:
    """Median and interquartile range."""
    q1, _, q3 = statistics.quantiles(times, n=4)
    return statistics.median(times), q3 - q1


def tflops(out_features: int, in_features: int, tokens: int, ms: float) -> float:
    """Dense-equivalent throughput, 2*tokens*out*in per call, for the dense and the sparse kernel alike."""
    return 2 * tokens * out_features * in_features / (ms * 1e9)
