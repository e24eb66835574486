"""OWL's allocation rule (sds_bench/pruners/owl.py) against a line-by-line transcription of the official code, on
synthetic blocks and on the trained embedded OPT, and its behaviour: mean = target, more outliers -> lower sparsity,
λ = 0 -> uniform, spread <= 2λ."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sds_bench.data import calibration
from sds_bench.errors import UserError
from sds_bench.models import adapter_for, load_model, prunable_linears
from sds_bench.passes import capture_block_inputs, run_block
from sds_bench.plugin import Pruner, parse_options
from sds_bench.pruners.owl import OWLOptions, outlier_ratio, owl_sparsities, wanda_metric
from sds_bench.stats import BUILTIN, COL_SQ, Accumulator

from .transcriptions import WrappedGPT, decoder_layers, find_layers, prepare_calibration_input

# --- Transcription of luuyin/OWL @ 1f0912de5526a72f11a79329da7db1f27be161b9, lib/prune_all.py: `check_outlier_mean`
# and `prune_wanda_outlier` (the outlier-ratio loop, the all_layer_ratio adjustment, and the per-layer sparsity of
# the pruning loop). Left out: printing, device maps, CUDA calls; the block's kwargs are forwarded as in
# tests/transcriptions.py (transformers 5). `WrappedGPT`, `find_layers` and the block-0 capture are Wanda's, which
# OWL ships unchanged (tests/transcriptions.py).


def check_outlier_mean(mask, threshold):
    W = mask
    count = 0
    total_params = 0
    max_shred = torch.mean(W) * threshold
    count += (W > max_shred).sum().item()
    total_params += W.numel()
    outlier_ratio = float(count) / total_params * 100
    return outlier_ratio


def official_layer_ratio(subset, wrapped_layers, Hyper_m):
    """The body of the loop once the block's statistics are in: one block's outlier ratio."""
    layer_wmetric = []
    for name in subset:
        W_metric = torch.abs(subset[name].weight.data) * torch.sqrt(wrapped_layers[name].scaler_row.reshape((1, -1)))
        layer_wmetric.append(W_metric)
    layer_wmetric = torch.cat([torch.flatten(x.cpu()) for x in layer_wmetric])
    for out_ratio in [Hyper_m]:
        out_ratio_layer = check_outlier_mean(layer_wmetric, out_ratio)
    return out_ratio_layer


@torch.no_grad()
def official_outlier_ratios(model, tokens, Hyper_m):
    """The outlier-ratio loop: statistics of the dense model, block by block (nothing is pruned in this pass)."""
    nsamples = tokens.shape[0]
    all_layer_ratio = []
    inps, outs, kwargs = prepare_calibration_input(model, tokens)
    layers = decoder_layers(model)
    for i in range(len(layers)):
        layer = layers[i]
        subset = find_layers(layer)
        wrapped_layers = {}
        for name in subset:
            wrapped_layers[name] = WrappedGPT(subset[name])

        def add_batch(name):
            def tmp(_, inp, out):
                wrapped_layers[name].add_batch(inp[0].data, out.data)  # noqa: B023
            return tmp

        handles = []
        for name in wrapped_layers:
            handles.append(subset[name].register_forward_hook(add_batch(name)))
        for j in range(nsamples):
            outs[j] = layer(inps[j].unsqueeze(0), **kwargs)[0]
        for h in handles:
            h.remove()
        out_ratio_layer = official_layer_ratio(subset, wrapped_layers, Hyper_m)
        for j in range(nsamples):
            outs[j] = layer(inps[j].unsqueeze(0), **kwargs)[0]
        inps, outs = outs, inps
        all_layer_ratio.append(out_ratio_layer)
    return all_layer_ratio


def official_sparsities(all_layer_ratio, Lamda, sparsity_ratio):
    """The adjustment to per-layer density, then each layer's sparsity as the pruning loop takes it."""
    all_layer_ratio = np.array(all_layer_ratio)
    all_layer_ratio = ((all_layer_ratio - all_layer_ratio.min()) * (1/(all_layer_ratio.max() - all_layer_ratio.min()) * Lamda*2))  # noqa: E501
    all_layer_ratio = all_layer_ratio - np.mean(all_layer_ratio) + (1 - sparsity_ratio)
    sparsities = []
    for i in range(len(all_layer_ratio)):
        layer_sparsity_ratio = 1 - all_layer_ratio[i]
        if layer_sparsity_ratio <= 0:
            layer_sparsity_ratio = 0.01
        sparsities.append(layer_sparsity_ratio)
    return sparsities

# --- End of transcription.


def synthetic_blocks(dtype, seed=0):
    """4 blocks of 3 Linears each, with heavy-tailed column statistics whose tail differs from block to block."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for b in range(4):
        subset, wrapped = {}, {}
        for name, (rows, cols) in {"q": (24, 16), "up": (40, 16), "down": (16, 40)}.items():
            lin = nn.Linear(cols, rows, bias=False)
            lin.weight.data = torch.randn(rows, cols, generator=g).to(dtype)
            subset[name] = lin
            wrapped[name] = SimpleNamespace(scaler_row=torch.exp((0.5 + 0.4 * b) * torch.randn(cols, generator=g)))
        blocks.append((subset, wrapped))
    return blocks


def our_ratio(subset, col_sq, m):
    return outlier_ratio([wanda_metric(subset[n].weight.data, col_sq[n]) for n in subset], m)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("m", "lam", "target"), [(5.0, 0.08, 0.7), (3.0, 0.2, 0.5), (2.0, 0.3, 0.1)])
def test_synthetic_parity(dtype, m, lam, target):
    blocks = synthetic_blocks(dtype)
    theirs = [official_layer_ratio(subset, wrapped, m) for subset, wrapped in blocks]
    ours = [our_ratio(subset, {n: w.scaler_row for n, w in wrapped.items()}, m) for subset, wrapped in blocks]
    assert ours == theirs and len(set(ours)) == 4
    assert owl_sparsities(ours, target, OWLOptions(m, lam)) == official_sparsities(theirs, lam, target)


def test_floor_matches_official():
    ratios, options = [0.5, 1.0, 4.0, 9.0], OWLOptions(lam=0.3)
    ours = owl_sparsities(ratios, 0.1, options)
    assert ours == official_sparsities(ratios, 0.3, 0.1) and ours[-1] == 0.01


@torch.no_grad()
def dense_col_sq(model, tokens):
    """col_sq of every Linear of every block on the dense model's inputs, block by block (the official first pass)."""
    inputs, kwargs = capture_block_inputs(model, tokens, torch.device("cpu"), torch.device("cpu"))
    stats = []
    for block in adapter_for(model).decoder_blocks(model):
        linears = prunable_linears(block)
        accs = {n: Accumulator(BUILTIN[COL_SQ], lin.in_features) for n, lin in linears.items()}
        handles = [lin.register_forward_hook(lambda mod, args, out, acc=accs[n]: acc.add(args[0]))
                   for n, lin in linears.items()]
        try:
            inputs = run_block(block, inputs, kwargs, torch.device("cpu"))
        finally:
            for h in handles:
                h.remove()
        stats.append((linears, {n: acc.value for n, acc in accs.items()}))
    return stats


@pytest.fixture(scope="module")
def embedded_opt():
    model, tokenizer = load_model("embedded:opt-tiny")
    return model, calibration("embedded", tokenizer, nsamples=16, seqlen=128, seed=0).tokens


def test_embedded_opt_parity(embedded_opt):
    model, tokens = embedded_opt
    options, target = OWLOptions(), 0.7
    theirs = official_outlier_ratios(model, tokens, options.m)
    ours = [our_ratio(linears, col_sq, options.m) for linears, col_sq in dense_col_sq(model, tokens)]
    assert ours == theirs and len(set(ours)) == len(ours) == 4
    assert owl_sparsities(ours, target, options) == official_sparsities(theirs, options.lam, target)


RATIOS = [1.3, 0.2, 4.7, 2.2, 0.9, 3.1]


@pytest.mark.parametrize("target", [0.5, 0.7])
def test_mean_is_target_and_more_outliers_lower_sparsity(target):
    sparsities = owl_sparsities(RATIOS, target, OWLOptions())
    assert np.mean(sparsities) == pytest.approx(target, abs=1e-12)
    assert np.argsort(sparsities).tolist() == np.argsort(RATIOS)[::-1].tolist()


@pytest.mark.parametrize("lam", [0.0, 0.05, 0.08, 0.2])
def test_spread_is_2_lambda(lam):
    sparsities = owl_sparsities(RATIOS, 0.6, OWLOptions(lam=lam))
    assert max(sparsities) - min(sparsities) == pytest.approx(2 * lam, abs=1e-12)
    if lam == 0:
        assert sparsities == pytest.approx([0.6] * len(RATIOS), abs=1e-12)


def test_equal_ratios_give_uniform_where_official_gives_nan():
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(official_sparsities([2.0] * 3, 0.08, 0.5)).all()
    assert owl_sparsities([2.0] * 3, 0.5, OWLOptions()) == [0.5] * 3


def test_options_defaults_and_bounds():
    owl = Pruner("owl", "test", options=OWLOptions)
    assert parse_options(owl, {}) == OWLOptions(5.0, 0.08)
    for bad in ({"m": "0"}, {"lam": "-0.01"}):
        with pytest.raises(UserError, match="owl"):
            parse_options(owl, bad)
