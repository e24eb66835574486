"""Built-in pruners through the engine on tiny OPT and Llama models: patterns, scope, and quality ordering."""

from dataclasses import replace

import pytest
import torch

import sds_bench
from sds_bench.engine import apply_pruner
from sds_bench.models import adapter_for, prunable_linears
from sds_bench.passes import capture_block_inputs, run_block
from sds_bench.registry import registry
from sds_bench.sparsity import Sparsity, satisfies
from sds_bench.testing import tiny_opt

PATTERNS = ["0.5", "2:4", "4:8", "1:4", "2:8"]


def decoder_linears(model):
    blocks = adapter_for(model).decoder_blocks(model)
    return {f"{i}.{n}": lin for i, b in enumerate(blocks) for n, lin in prunable_linears(b).items()}


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_exact_pattern_on_every_decoder_linear(tiny_model, calib_tokens, method, pattern):
    dense = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    record = sds_bench.prune(tiny_model, None, method, pattern, sds_bench.Calibration(calib_tokens, "test", 0), quiet=True)
    sparsity = Sparsity.parse(pattern)
    linears = decoder_linears(tiny_model)
    assert len(record["layers"]) == len(linears) == 7 * 2 - (2 if tiny_model.config.model_type == "opt" else 0)
    for name, lin in linears.items():
        w = lin.weight.data
        assert satisfies(w, sparsity), name
        zeros = int((w == 0).sum())
        if sparsity.is_nm:  # exactly N of every M, no more
            assert zeros == w.numel() * sparsity.n // sparsity.m, name
        elif method == "wanda":  # int(cols*s) per row
            assert zeros == w.shape[0] * int(w.shape[1] * sparsity.ratio), name
        else:  # reference quirk: one more than half per matrix (magnitude) or per 128-column block (SparseGPT)
            assert zeros == int(w.numel() * sparsity.ratio) + 1, name
    untouched = [k for k in dense if not any(k.endswith(f"{n}.weight") for n in _full_names(tiny_model))]
    assert any("embed" in k for k in untouched) and untouched
    after = tiny_model.state_dict()
    for k in untouched:
        assert torch.equal(after[k], dense[k]), f"{k} changed"


def _full_names(model):
    a = adapter_for(model)
    return [f"{a.blocks}.{name}" for name in decoder_linears(model)]


def test_every_block_visited_in_order():
    seen = []
    pruner = registry().pruner("magnitude")

    def spy(weight, stats, sparsity, options):
        seen.append(stats.name)
        return pruner.prune(weight, stats, sparsity, options)

    apply_pruner(tiny_opt(), replace(pruner, prune=spy), "2:4", None, pruner.options(), quiet=True)
    blocks = [n.split(".")[3] for n in seen]
    assert blocks == sorted(blocks) and set(blocks) == {"0", "1"} and len(seen) == 12


def test_exact_option_gives_exact_counts():
    model = tiny_opt()
    sds_bench.prune(model, None, "magnitude", "0.5", options={"exact": "true"}, quiet=True)
    for lin in decoder_linears(model).values():
        assert int((lin.weight == 0).sum()) == lin.weight.numel() // 2


@torch.no_grad()
def reconstruction_error(method: str, model, tokens: torch.Tensor, pattern: str = "2:4") -> float:
    """Sum over Linears of ||WX - W'X||^2 on each layer's own calibration inputs (from the pruned-so-far model)."""
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    sds_bench.prune(model, None, method, pattern, sds_bench.Calibration(tokens, "test", 0), quiet=True)
    pruned = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(dense)
    adapter = adapter_for(model)
    inputs, kwargs = capture_block_inputs(model, tokens, torch.device("cpu"), torch.device("cpu"))
    total = 0.0
    for i, block in enumerate(adapter.decoder_blocks(model)):
        xs = {}
        hooks = [lin.register_forward_hook(lambda m, a, o, n=n, xs=xs: xs.setdefault(n, []).append(a[0]))
                 for n, lin in prunable_linears(block).items()]
        run_block(block, inputs, kwargs, torch.device("cpu"))
        for h in hooks:
            h.remove()
        for n, lin in prunable_linears(block).items():
            x = torch.cat(xs[n]).reshape(-1, lin.in_features)
            w_new = pruned[f"{adapter.blocks}.{i}.{n}.weight"]
            total += float(((x @ lin.weight.T) - (x @ w_new.T)).pow(2).sum())
            lin.weight.data = w_new
        inputs = run_block(block, inputs, kwargs, torch.device("cpu"))
    return total


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["0.5", "2:4", "4:8"])
@pytest.mark.parametrize("name", ["embedded:opt-tiny", "embedded:llama-tiny"])
def test_reconstruction_error_ordering(name, pattern):
    """SparseGPT < Wanda <= magnitude at the same pattern, summed over a small trained model's layers. (On random
    weights Wanda's per-row comparison can lose to magnitude's per-matrix one at 50%: the ordering is a property of
    trained models and their outlier activations.)"""
    _, tokenizer = sds_bench.load_model(name)
    tokens = sds_bench.calibration("embedded", tokenizer, 16, 64, 0).tokens
    errors = {m: reconstruction_error(m, sds_bench.load_model(name)[0], tokens, pattern)
              for m in ("magnitude", "wanda", "sparsegpt")}
    assert errors["sparsegpt"] < errors["wanda"] <= errors["magnitude"], errors


def test_wanda_variant_reaches_target_within_tolerance(calib_tokens):
    model = tiny_opt()
    sds_bench.prune(model, None, "wanda", "0.5", sds_bench.Calibration(calib_tokens, "t", 0), options={"variant": "1"},
                    quiet=True)
    zeros = sum(int((lin.weight == 0).sum()) for lin in decoder_linears(model).values())
    total = sum(lin.weight.numel() for lin in decoder_linears(model).values())
    assert abs(zeros / total - 0.5) < 0.01


def test_sparsegpt_dead_input_column_is_zeroed():
    from sds_bench.pruners.sparsegpt import SparseGPTOptions, sparsegpt
    from sds_bench.stats import LayerStats

    torch.manual_seed(0)
    x = torch.randn(64, 16)
    x[:, 3] = 0
    w = torch.randn(8, 16)
    w_before, gram = w.clone(), 2 * x.T @ x
    gram_before = gram.clone()
    out = sparsegpt(w, LayerStats("l", gram=gram), Sparsity.parse("2:4"), SparseGPTOptions())
    assert torch.all(out[:, 3] == 0) and satisfies(out, Sparsity.parse("2:4"))
    assert torch.equal(w, w_before) and torch.equal(gram, gram_before)  # neither input is modified
