"""The contract a pruner plugin must keep, as a kit its author calls from their own tests.

    from sds_bench.testing import check_pruner
    def test_contract(): check_pruner("my-pruner")

Tiny randomly initialised OPT and Llama models are built in-process (no downloads).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

import sds_bench
from sds_bench.models import adapter_for, prunable_linears
from sds_bench.registry import registry
from sds_bench.runner import Store, run_suite, suite_from_dict
from sds_bench.sparsity import Sparsity, satisfies

VOCAB = 320


def tiny_opt(seed: int = 0, layers: int = 2) -> OPTForCausalLM:
    """A 2-block OPT (hidden 32, ffn 64), eager attention."""
    torch.manual_seed(seed)
    return OPTForCausalLM(OPTConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, ffn_dim=64,
                                    num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
                                    attn_implementation="eager")).eval()


def tiny_llama(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    """A 2-block Llama (hidden 32, intermediate 64, grouped-query attention), eager attention."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        attn_implementation="eager")).eval()


def tiny_calibration(nsamples: int = 8, seqlen: int = 32, seed: int = 0) -> sds_bench.Calibration:
    """Random token windows for the tiny models."""
    tokens = torch.randint(0, VOCAB, (nsamples, seqlen), generator=torch.Generator().manual_seed(seed))
    return sds_bench.Calibration(tokens, "random", seed)


def decoder_weights(model) -> dict[str, torch.Tensor]:
    """The prunable decoder Linear weights by state_dict key."""
    adapter = adapter_for(model)
    return {f"{adapter.blocks}.{i}.{name}.weight": lin.weight.data
            for i, block in enumerate(adapter.decoder_blocks(model)) for name, lin in prunable_linears(block).items()}


def check_pruner(name: str, patterns: tuple[str, ...] = ("0.5", "2:4", "4:8"), options: dict[str, Any] | None = None,
                 refinements: bool = True, sweep: bool = True) -> None:
    """Assert the plugin contract on tiny OPT and Llama: exact pattern, nothing else touched, deterministic, usable
    under every registered refinement (SDS, DSnoT: R-name at one pattern both support, their default options), and
    usable in a sweep like a built-in. `refinements=False` opts out, for a pruner no refinement can take."""
    reg = registry()
    for build in (tiny_opt, tiny_llama):
        for pattern in patterns:
            if Sparsity.parse(pattern).kind in reg.pruner(name).patterns:
                _check_once(build, name, pattern, options)
    for refinement in reg.refinements if refinements else ():
        derived = reg.pruners.get(f"{refinement}-{name}")
        if derived is not None and derived.refines == refinement:
            _check_once(tiny_opt, derived.name, "2:4" if "nm" in derived.patterns else "0.5", None)
    if sweep:
        check_in_sweep(name, options)


def check_in_sweep(name: str, options: dict[str, Any] | None = None) -> None:
    """Run a two-cell suite (dense and `name` at 2:4, or 50% if it has no N:M) on the embedded model and check both
    rows succeeded."""
    pattern = "2:4" if "nm" in registry().pruner(name).patterns else "50%"
    suite = {"name": "contract", "models": ["embedded:opt-tiny"], "sparsities": [pattern],
             "methods": [{"name": name, "pruner": name, "options": options or {}}],
             "calibration": {"source": "embedded", "nsamples": 4, "seqlen": 64},
             "evaluators": [{"name": "perplexity", "options": {"dataset": "embedded", "max_windows": 2, "seqlen": 64}}]}
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_suite(suite_from_dict(suite, Path(tmp) / "contract.toml"), tmp, quiet=True)
        rows = Store(Path(tmp) / "contract").rows()
        assert summary.failed == 0 and len(rows) == 2, [r.get("error") for r in rows]


def _check_once(build, method: str, pattern: str, options: dict[str, Any] | None) -> None:
    sparsity = Sparsity.parse(pattern)
    results = []
    for _ in range(2):
        model = build()
        dense = {k: v.clone() for k, v in model.state_dict().items()}
        sds_bench.prune(model, None, method, sparsity, tiny_calibration(), options=options, seed=0, quiet=True)
        pruned = decoder_weights(model)
        for key, weight in pruned.items():
            assert satisfies(weight, sparsity), f"{method} {pattern}: {key} misses the pattern"
            if sparsity.is_nm:
                zeros = (weight == 0).reshape(weight.shape[0], -1, sparsity.m).sum(-1)
                assert bool((zeros == sparsity.n).all()) or bool((dense[key] == 0).any()), \
                    f"{method} {pattern}: {key} prunes more than {sparsity.n} of {sparsity.m}"
        for key, value in model.state_dict().items():
            if key not in pruned:
                assert torch.equal(value, dense[key]), f"{method} changed {key}, which is not a decoder Linear weight"
        results.append(pruned)
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), f"{method} {pattern}: not deterministic under a seed ({key})"
