"""The 2:4 speed benchmark: what semi-structured sparsity buys, on this GPU, for the Linear layers of given models."""

from sds_bench.kernels.bench import MIN_REPS, run
from sds_bench.kernels.gpu import gpu_problem
from sds_bench.kernels.plan import E2EPlan, Plan, make_e2e_plan, make_plan
from sds_bench.kernels.shapes import LinearShape, collect_shapes, model_shapes

__all__ = ["MIN_REPS", "E2EPlan", "LinearShape", "Plan", "collect_shapes", "gpu_problem", "make_e2e_plan", "make_plan",
           "model_shapes", "run"]
