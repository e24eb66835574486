"""The official pruning code, transcribed line by line: what the parity tests and the benchmarks compare ours with.

Transcribed from IST-DASLab/sparsegpt @ 147d215 (sparsegpt.py `SparseGPT.add_batch` / `fasterprune`, the
sequential loop of opt.py `opt_sequential`, datautils.py `get_wikitext2`) and locuslab/wanda @ 8e8fc87
(lib/prune.py `find_layers`, `prepare_calibration_input`, `prune_magnitude`, `prune_wanda`; lib/layerwrapper.py
`WrappedGPT`; lib/data.py `get_c4`). Every arithmetic operation is kept in the official order, so that the result is
the official one bit for bit where the CPU is deterministic. Left out: quantisation, Conv1D/Conv2d, DEBUG, printing,
timing, multi-GPU device maps and the CUDA calls (all no-ops on CPU). One adaptation to transformers 5: the catcher
keeps every keyword argument the model passes block 0, as transformers 5 gives LLaMA blocks their rotary embeddings
as `position_embeddings` (the official code forwards only `attention_mask` and `position_ids`).
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import torch
from torch import nn


class SparseGPT:
    """sparsegpt.py's per-Linear state: the running-mean Hessian H = (2/N) Σ x xᵀ, and the pruning solve."""

    def __init__(self, layer: nn.Linear):
        self.layer = layer
        self.rows, self.columns = layer.weight.shape
        self.H = torch.zeros((self.columns, self.columns), device=layer.weight.device)
        self.nsamples = 0

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor) -> None:
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())

    def fasterprune(self, sparsity: float, prunen: int = 0, prunem: int = 0, blocksize: int = 128,
                    percdamp: float = 0.01) -> None:
        W = self.layer.weight.data.clone().float()
        H = self.H
        del self.H
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0
        damp = percdamp * torch.mean(torch.diag(H))
        diag = torch.arange(self.columns, device=W.device)
        H[diag, diag] += damp
        H = torch.linalg.cholesky(H)
        H = torch.cholesky_inverse(H)
        H = torch.linalg.cholesky(H, upper=True)
        Hinv = H
        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            count = i2 - i1
            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]
            if prunen == 0:
                tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                mask1 = tmp <= thresh
            else:
                mask1 = torch.zeros_like(W1) == 1
            for i in range(count):
                w = W1[:, i]
                d = Hinv1[i, i]
                if prunen != 0 and i % prunem == 0:
                    tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                    mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
                q = w.clone()
                q[mask1[:, i]] = 0
                Q1[:, i] = q
                err1 = (w - q) / d
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err1
            W[:, i1:i2] = Q1
            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
        self.layer.weight.data = W.reshape(self.layer.weight.shape).to(self.layer.weight.data.dtype)


class WrappedGPT:
    """layerwrapper.py: Wanda's running mean over sequences of the per-input-column squared norm (`scaler_row`)."""

    def __init__(self, layer: nn.Linear):
        self.layer = layer
        self.scaler_row = torch.zeros((layer.weight.shape[1]), device=layer.weight.device)
        self.nsamples = 0

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor) -> None:
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.scaler_row *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = inp.type(torch.float32)
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.nsamples


def find_layers(module: nn.Module, name: str = "") -> dict[str, nn.Linear]:
    """Every nn.Linear below `module`, by dotted name, depth first."""
    if type(module) is nn.Linear:
        return {name: module}
    res = {}
    for name1, child in module.named_children():
        res.update(find_layers(child, name + "." + name1 if name != "" else name1))
    return res


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """`model.model.decoder.layers` (OPT) or `model.model.layers` (LLaMA)."""
    return model.model.decoder.layers if hasattr(model.model, "decoder") else model.model.layers


class _Catcher(nn.Module):
    def __init__(self, module: nn.Module, inps: torch.Tensor, cache: dict):
        super().__init__()
        self.module, self.inps, self.cache = module, inps, cache

    def forward(self, inp, **kwargs):
        self.inps[self.cache["i"]] = inp
        self.cache["i"] += 1
        self.cache["kwargs"] = kwargs
        raise ValueError


@torch.no_grad()
def prepare_calibration_input(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Block 0's inputs for each calibration row, fed one row at a time, in the model's dtype; and its kwargs."""
    layers = decoder_layers(model)
    dtype = next(iter(model.parameters())).dtype
    inps = torch.zeros((tokens.shape[0], tokens.shape[1], model.config.hidden_size), dtype=dtype)
    cache = {"i": 0, "kwargs": None}
    layers[0] = _Catcher(layers[0], inps, cache)
    for row in tokens:
        try:
            model(row.unsqueeze(0), use_cache=False)
        except ValueError:
            pass
    layers[0] = layers[0].module
    return inps, torch.zeros_like(inps), cache["kwargs"]


def _add_batch(wrapped):
    def tmp(_, inp, out):
        wrapped.add_batch(inp[0].data, out.data)
    return tmp


@torch.no_grad()
def sequential(model: nn.Module, tokens: torch.Tensor, wrapper: type, prune) -> None:
    """The official loop: per block, hook every Linear while running each row, prune them, re-run the block."""
    inps, outs, kwargs = prepare_calibration_input(model, tokens)
    for layer in decoder_layers(model):
        subset = find_layers(layer)
        wrapped = {name: wrapper(subset[name]) for name in subset}
        handles = [subset[name].register_forward_hook(_add_batch(wrapped[name])) for name in wrapped]
        for j in range(tokens.shape[0]):
            outs[j] = layer(inps[j].unsqueeze(0), **kwargs)[0]
        for h in handles:
            h.remove()
        for name in subset:
            prune(subset[name], wrapped[name])
        for j in range(tokens.shape[0]):
            outs[j] = layer(inps[j].unsqueeze(0), **kwargs)[0]
        inps, outs = outs, inps


def prune_sparsegpt(model: nn.Module, tokens: torch.Tensor, sparsity: float, prunen: int = 0, prunem: int = 0,
                    blocksize: int = 128, percdamp: float = 0.01) -> None:
    """opt.py `opt_sequential` with `SparseGPT` (the Wanda repo's `prune_sparsegpt` is the same loop)."""
    sequential(model, tokens, SparseGPT,
               lambda layer, g: g.fasterprune(sparsity, prunen, prunem, blocksize=blocksize, percdamp=percdamp))


def prune_wanda(model: nn.Module, tokens: torch.Tensor, sparsity: float, prune_n: int = 0, prune_m: int = 0) -> None:
    """lib/prune.py `prune_wanda` (without the appendix variant)."""

    def prune(layer: nn.Linear, wrapped: WrappedGPT) -> None:
        W_metric = torch.abs(layer.weight.data) * torch.sqrt(wrapped.scaler_row.reshape((1, -1)))
        W_mask = torch.zeros_like(W_metric) == 1
        if prune_n != 0:
            for ii in range(W_metric.shape[1]):
                if ii % prune_m == 0:
                    tmp = W_metric[:, ii:(ii + prune_m)].float()
                    W_mask.scatter_(1, ii + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
        else:
            sort_res = torch.sort(W_metric, dim=-1, stable=True)
            indices = sort_res[1][:, :int(W_metric.shape[1] * sparsity)]
            W_mask.scatter_(1, indices, True)
        layer.weight.data[W_mask] = 0

    sequential(model, tokens, WrappedGPT, prune)


@torch.no_grad()
def prune_magnitude(model: nn.Module, sparsity: float, prune_n: int = 0, prune_m: int = 0) -> None:
    """lib/prune.py `prune_magnitude`: |W| per matrix, or the prune_n smallest of every prune_m; no calibration."""
    for layer in decoder_layers(model):
        subset = find_layers(layer)
        for name in subset:
            W = subset[name].weight.data
            W_metric = torch.abs(W)
            if prune_n != 0:
                W_mask = torch.zeros_like(W) == 1
                for ii in range(W_metric.shape[1]):
                    if ii % prune_m == 0:
                        tmp = W_metric[:, ii:(ii + prune_m)].float()
                        W_mask.scatter_(1, ii + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
            else:
                thresh = torch.sort(W_metric.flatten())[0][int(W.numel() * sparsity)]
                W_mask = W_metric <= thresh
            W[W_mask] = 0


def sparsegpt_solve(W: torch.Tensor, H: torch.Tensor, sparsity: float, prunen: int = 0, prunem: int = 0,
                    blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """`SparseGPT.fasterprune` on one weight matrix W and a given H (the per-layer solve alone); W is not changed."""
    layer = SimpleNamespace(weight=W.clone())  # all SparseGPT reads of its layer
    g = SparseGPT(layer)
    g.H = H.clone()
    g.fasterprune(sparsity, prunen, prunem, blocksize=blocksize, percdamp=percdamp)
    return layer.weight.data


def sample_windows(ids: torch.Tensor, nsamples: int, seed: int, seqlen: int) -> torch.Tensor:
    """datautils.py `get_wikitext2` / `get_ptb` calibration: random windows of one long token stream [1, T]."""
    random.seed(seed)
    trainloader = []
    for _ in range(nsamples):
        i = random.randint(0, ids.shape[1] - seqlen - 1)
        j = i + seqlen
        trainloader.append(ids[:, i:j])
    return torch.cat(trainloader)


def get_c4_train(traindata, tokenizer, nsamples: int, seed: int, seqlen: int) -> torch.Tensor:
    """lib/data.py `get_c4` calibration: a random document longer than seqlen tokens, a random window of it.
    (SparseGPT's datautils.py accepts a document of exactly seqlen tokens, then fails in randint; Wanda's is this.)"""
    random.seed(seed)
    trainloader = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(traindata) - 1)
            trainenc = tokenizer(traindata[i]["text"], return_tensors="pt")
            if trainenc.input_ids.shape[1] > seqlen:
                break
        i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
        j = i + seqlen
        trainloader.append(trainenc.input_ids[:, i:j])
    return torch.cat(trainloader)


def prune_official(method: str, model, calib: torch.Tensor, spec) -> None:
    """Prune `model` in place with the transcription of the official code for `method` at `spec` (a Sparsity)."""
    if method == "magnitude":
        prune_magnitude(model, spec.ratio, spec.n, spec.m)
    elif method == "wanda":
        prune_wanda(model, calib, spec.ratio, spec.n, spec.m)
    else:
        prune_sparsegpt(model, calib, spec.ratio, spec.n, spec.m)
