"""sds-bench: reproducible one-shot pruning of pre-trained language models (SDS, SparseGPT, Wanda, ...)."""

from sds_bench.api import evaluate, prune, save_pruned
from sds_bench.data import Calibration, calibration
from sds_bench.errors import UserError
from sds_bench.hookspecs import hookimpl
from sds_bench.models import load_model
from sds_bench.plugin import API_VERSION, EvalResult, Evaluator, Pruner
from sds_bench.sparsity import Sparsity
from sds_bench.stats import COL_SQ, DENSE_GRAM, GRAM, LayerStats

__all__ = ["API_VERSION", "COL_SQ", "DENSE_GRAM", "GRAM", "Calibration", "EvalResult", "Evaluator", "LayerStats",
           "Pruner", "Sparsity", "UserError", "calibration", "evaluate", "hookimpl", "load_model", "prune", "save_pruned"]
