"""Týr-the-Pruner and the Wanda-sp baseline: exact structural budget, budget-keeping search, seeded
reproducibility, local pruning optimality, and the physically shrunk model loading with from_pretrained."""

import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

import sds_bench
from sds_bench.cli import main
from sds_bench.errors import UserError
from sds_bench.models import adapter_for
from sds_bench.pruners.tyr import structures
from sds_bench.pruners.tyr.local import obs_candidates, wanda_sp_candidates
from sds_bench.pruners.tyr.search import mutate
from sds_bench.pruners.tyr.supernet import Slot, expected_weight, grid
from sds_bench.testing import VOCAB, tiny_calibration, tiny_llama, tiny_opt

QUICK = {"iterations": "2", "generations": "3", "offspring": "6", "stage_tokens": "64,256", "stage_survivors": "2,1"}
PER_STRUCTURE = {"opt": {"attn": 3 * (8 * 32 + 8) + 32 * 8, "ffn": 32 + 1 + 32},
                 "llama": {"attn": (16 + 8 + 8) * 32 + 32 * 16, "ffn": 3 * 32}}
"""Parameters of one structure of the tiny models, by hand: OPT head (q/k/v rows with bias, out_proj columns),
OPT channel (fc1 row and bias, fc2 column); Llama KV group (2 query heads, 1 key and 1 value head, o_proj
columns), Llama channel (gate and up rows, down column)."""


def prune(model, method="tyr", sparsity="0.5", seed=0, **options):
    return sds_bench.prune(model, None, method, sparsity, tiny_calibration(), options=options, seed=seed, quiet=True)


def kept_structures(model) -> dict[str, list[int]]:
    """Kept structures per layer, read from the weights: a structure is kept when its reader columns are nonzero,
    and a pruned one must have all its rows and columns zero."""
    out = {}
    for kind in structures.kinds(model):
        out[kind.name] = []
        for block in adapter_for(model).decoder_blocks(model):
            cols = block.get_submodule(kind.cols).weight.data.reshape(-1, kind.count, kind.width)
            kept = cols.ne(0).any(2).any(0)
            for name in kind.rows:
                lin = block.get_submodule(name)
                rows = lin.weight.data.reshape(kind.count, -1)
                assert not rows[~kept].any(), f"{name}: rows of a pruned structure are not zero"
                if lin.bias is not None:
                    assert not lin.bias.data.reshape(kind.count, -1)[~kept].any()
            out[kind.name].append(int(kept.sum()))
    return out


@pytest.mark.parametrize("sparsity", ["0.5", "0.3"])
def test_budget_is_exact_in_structures_and_parameters(tiny_model, sparsity):
    family = "opt" if tiny_model.config.model_type == "opt" else "llama"
    dense = tiny_model.num_parameters()
    record = prune(tiny_model, sparsity=sparsity, **QUICK)
    kept = kept_structures(tiny_model)
    totals = {"attn": 2 * (4 if family == "opt" else 2), "ffn": 2 * 64}
    for kind, total in totals.items():
        assert sum(kept[kind]) == total - int(float(sparsity) * total + 0.5), kind
    assert kept == record["allocation"]
    removed = sum((totals[k] - sum(kept[k])) * PER_STRUCTURE[family][k] for k in totals)
    assert record["parameters"]["removed"] == removed
    assert record["parameters"]["per_structure"] == PER_STRUCTURE[family]
    assert tiny_model.num_parameters() == dense


def test_shrink_has_requested_parameter_count_and_loads_with_from_pretrained(tiny_model, tmp_path):
    zeroed = tiny_llama() if tiny_model.config.model_type == "llama" else tiny_opt()
    dense = tiny_model.num_parameters()
    record = prune(tiny_model, shrink="true", search="false")
    prune(zeroed, search="false")
    assert record["shrunk"] and tiny_model.num_parameters() == dense - record["parameters"]["removed"]
    tiny_model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__.startswith("Tyr") and loaded.num_parameters() == tiny_model.num_parameters()
    x = tiny_calibration().tokens[:2]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, zeroed(x).logits, atol=1e-5, rtol=1e-4)


def test_shrunk_layer_without_heads_outputs_the_projection_bias(tmp_path):
    model = tiny_opt()
    keep = {"attn": [torch.tensor([False] * 4), torch.tensor([True, False, True, False])],
            "ffn": [torch.arange(64) < 0, torch.arange(64) % 3 == 0]}
    reference = tiny_opt()
    for i, block in enumerate(adapter_for(reference).decoder_blocks(reference)):
        for kind in structures.kinds(reference):
            structures.zero_pruned(block, kind, keep[kind.name][i])
    structures.shrink(model, keep)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.config.tyr_widths == {"attn": [0, 2], "ffn": [0, 22]}
    x = tiny_calibration().tokens[:2]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, reference(x).logits, atol=1e-5, rtol=1e-4)


def test_search_moves_keep_each_kind_total():
    kinds = [structures.Kind(name, (), "", 8, 1, 1) for name in ("attn", "ffn")]
    slots = [Slot(k, i, c, 2, grid(c, 2, 4, 8)) for i, c in enumerate([4, 3, 5, 0]) for k in kinds]
    rng, levels = random.Random(0), (0,) * len(slots)
    moved = set()
    for _ in range(300):
        levels = mutate(levels, slots, rng)
        for k in kinds:
            assert sum(s.kept(j) for s, j in zip(slots, levels) if s.kind is k) == 12
        assert all(0 <= s.kept(j) <= 8 and j in s.levels for s, j in zip(slots, levels))
        moved.add(levels)
    assert len(moved) > 20


def test_reproducible_under_a_seed():
    runs = []
    for _ in range(2):
        model = tiny_opt()
        record = prune(model, seed=3, **QUICK)
        runs.append((record["allocation"], [p.clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_search_fitness_never_worsens_and_steps_halve():
    record = prune(tiny_llama(), **QUICK)
    for iteration in record["search"]["iterations"]:
        curve = iteration["fitness"]  # the last stage reads all 256 calibration tokens, and the parent rejoins it
        assert len(curve) == 3 and all(b <= a * (1 + 1e-6) for a, b in zip(curve, curve[1:])), curve
    assert [it["steps"] for it in record["search"]["iterations"]] == [{"attn": 1, "ffn": 8}, {"attn": 1, "ffn": 4}]


def output_error(X, W, V) -> float:
    return float(((X @ (V - W).t()) ** 2).sum())


def test_obs_candidates_are_nested_least_squares_and_beat_wanda_sp():
    torch.manual_seed(0)
    X = torch.randn(512, 24) @ torch.randn(24, 24)
    W, H = torch.randn(16, 24), 2 * X.t() @ X / 512
    obs = obs_candidates(W, H, 3, [8, 5, 2], damp=0.01, rounds=16)
    wsp = wanda_sp_candidates(W, H, 3, [8, 5, 2])
    torch.testing.assert_close(obs[8][0], W, atol=1e-4, rtol=1e-4)
    assert bool((obs[2][1] <= obs[5][1]).all())
    Hd = H + 0.01 * H.diagonal().mean() * torch.eye(24)
    for kept in (5, 2):
        Wk, keep = obs[kept]
        cols = structures.expand(keep, 3)
        assert int(keep.sum()) == kept and not Wk[:, ~cols].any()
        gradient = (Wk - W) @ Hd
        assert gradient[:, cols].abs().max() < 1e-3 * gradient.abs().max()
        assert output_error(X, W, Wk) < output_error(X, W, wsp[kept][0])


def test_expected_weight_is_density_weighted():
    kind = structures.Kind("ffn", (), "", 4, 1, 1)
    slot = Slot(kind, 0, 2, 1, [-1, 0, 1], dense=torch.zeros(2, 4))
    slot.candidates = {j: (torch.full((2, 4), float(j + 2)), None) for j in slot.levels}
    torch.testing.assert_close(expected_weight(slot), torch.full((2, 4), (1 * 1 + 2 * 2 + 3 * 3) / 6))


def test_uniform_split_is_even_and_exact():
    assert structures.uniform(10, 4) == [3, 2, 3, 2]
    assert structures.uniform(8, 4) == [2, 2, 2, 2] and sum(structures.uniform(23, 7)) == 23


@pytest.mark.parametrize("method, options", [("tyr", {"search": "false"}), ("wanda-sp", {})])
def test_uniform_arms_keep_the_same_counts(method, options):
    model = tiny_llama()
    record = prune(model, method, **options)
    assert record["allocation"] == {"attn": [1, 1], "ffn": [32, 32]} and kept_structures(model) == record["allocation"]
    assert record["search"]["iterations"][0]["fitness"] == []


@pytest.mark.parametrize("options, message", [
    ({"levels": "4"}, "levels must be odd"),
    ({"stage_tokens": "64,x"}, "stage_tokens must be comma-separated integers"),
    ({"stage_tokens": "64", "stage_survivors": "2,1"}, "the same number of stages"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(UserError, match=message):
        prune(tiny_opt(), **options)


def test_nm_sparsity_is_refused():
    with pytest.raises(UserError, match="does not support nm sparsity"):
        prune(tiny_opt(), sparsity="2:4")


def test_cli_prunes_with_tyr_and_records_the_allocation(opt_dir, tmp_path):
    tokens = tmp_path / "calib.pt"
    torch.save(torch.randint(0, VOCAB, (8, 32), generator=torch.Generator().manual_seed(0)), tokens)
    out = tmp_path / "pruned"
    args = ["prune", str(opt_dir), "--method", "tyr", "--sparsity", "0.5", "--calibration", str(tokens),
            "--output", str(out), "--quiet"] + [a for k, v in QUICK.items() for a in ("-o", f"{k}={v}")]
    assert main(args) == 0
    record = json.loads((out / "pruning.json").read_text())
    assert record["method"] == "tyr" and record["parameters"]["structural_sparsity"] == 0.5
    assert kept_structures(AutoModelForCausalLM.from_pretrained(out)) == record["allocation"]


def test_an_already_shrunk_model_is_refused():
    model = tiny_opt()
    structures.shrink(model, {"attn": [torch.ones(4, dtype=torch.bool)] * 2,
                              "ffn": [torch.arange(64) < 40, torch.arange(64) < 24]})
    with pytest.raises(UserError, match="layers of equal width"):
        prune(model, **QUICK)
