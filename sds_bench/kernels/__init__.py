"""The 2:4 speed benchmark: what semi-structured sparsity buys, on this GPU, for the Linear layers of given models."""

from sds_bench.kernels.bench import E2EPlan, Plan, gpu_problem, make_plan, run
from sds_bench.kernels.shapes import LinearShape, collect_shapes, model_shapes

__all__ = ["E2EPlan", "LinearShape", "Plan", "collect_shapes", "gpu_problem", "make_plan", "model_shapes", "run"]
