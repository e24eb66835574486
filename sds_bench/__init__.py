"""sds-bench: reproducible one-shot pruning of pre-trained language models (SDS, SparseGPT, Wanda, ...)."""

from sds_bench.api import evaluate, prune, save_pruned
from sds_bench.data import Calibration, calibration
from sds_bench.errors import UserError
from sds_bench.hookspecs import hookimpl
from sds_bench.models import load_model
from sds_bench.plugin import API_VERSION, Allocator, EvalResult, Evaluator, Pruner, Refinement, Statistic
from sds_bench.sparsity import Sparsity
from sds_bench.stats import COL_SQ, COL_SUM, COL_VAR, DENSE_GRAM, GRAM, LayerStats

__all__ = ["API_VERSION", "COL_SQ", "COL_SUM", "COL_VAR", "DENSE_GRAM", "GRAM", "Allocator", "Calibration", "EvalResult",
           "Evaluator", "LayerStats", "Pruner", "Refinement", "Sparsity", "Statistic", "UserError", "calibration",
           "evaluate", "hookimpl", "load_model", "prune", "save_pruned"]
