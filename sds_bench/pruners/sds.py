"""SDS, the Sparse-Dense-Sparse mechanism (Li et al., COLING 2025, arXiv 2408.10473), around any per-layer pruner P.

For each prunable Linear with dense weight W_d and the calibration inputs X it sees in the already-pruned model
(the paper's SD-data):
  1. initial prune       W_s  = P(W_d, X)
  2. re-dense            W_re = min ||W_d X - W X||^2 + l1 ||W||_1 + l2 ||W||_2, from W_s with every weight free
  3. second prune        W_2  = P(W_re, X)
  4. weight adjustment   W    = min ||W_d X - (M*W) X||^2 from W_2, M re-selected by magnitude every iteration
Steps 2 and 4 read X only through the Gram H that the engine gathers (its N/2 scaling: stats.GRAM), so an
iteration is one [out, in] x [in, in] product; token activations are never touched.

Choices the paper leaves open, and the defaults (measured in docs/sds.md): the loss is the literal sum over tokens,
its Gram damped as SparseGPT damps its Hessian (so weights on inputs the calibration hardly excites stay near their
dense values); ||W||_2 is the Frobenius norm, not squared; step 2 is gradient descent with step lr / L (L the
curvature of the loss along H's top eigenvector, so lr 0.1 is a tenth of the largest stable step); step 4 is Adam
with lr in units of rms(W_d), returning its best iterate. The default `solver=fast` reaches the same or lower errors
in about a fifth of the products (`solve`); the option `solver=plain` runs the paper's 200 + 200 iterations.
"""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from sds_bench.errors import UserError
from sds_bench.hookspecs import hookimpl
from sds_bench.plugin import Refinement, option
from sds_bench.sparsity import Sparsity, pattern_mask, satisfies
from sds_bench.stats import DENSE_GRAM, GRAM, LayerStats

HISTOGRAM_STAGES = ("dense", "initial_prune", "redense", "final")
"""The weights whose histograms are recorded for chosen layers (the paper's Figure 1)."""
Optimizer = Literal["gd", "adam", "sgd"]
Solver = Literal["fast", "plain"]


@dataclass
class SDSOptions:
    """Every switch of SDS. Paper values where the paper gives one; the other defaults are justified in docs/sds.md."""

    initial_prune: bool = True
    """Step 1. Off: step 2 starts from the dense weights."""
    redense: bool = True
    """Step 2, re-dense with sparse regularisation. Off: step 3 re-prunes W_s."""
    second_prune: bool = True
    """Step 3. Off: step 4 starts from the magnitude projection of W_re (or W_re is so projected if step 4 is off)."""
    adjust: bool = True
    """Step 4, sparse weight adjustment, for models below adjust_max_params."""
    adjust_max_params: float = option(3e9, ge=0)
    """Step 4 runs only for models with fewer parameters than this (the paper skips it from about 3B on)."""
    redense_data: Literal["sparse", "dense"] = "sparse"
    """Inputs X of step 2: 'sparse' the pruned model's (the paper's SD-data), 'dense' the dense model's."""
    regularize: bool = True
    """Step 2's l1/l2 weight regularisation; off, step 2 only reconstructs the dense output."""
    l1: float = option(0.1, ge=0)
    """lambda_1 of l1 ||W||_1 (paper: 0.1)."""
    l2: float = option(0.1, ge=0)
    """lambda_2 of l2 ||W||_2 (paper: 0.1)."""
    l2_squared: bool = False
    """Penalise ||W||_2^2 (weight decay) instead of ||W||_2 as the paper writes it (Frobenius norm)."""
    lr: float = option(0.1, gt=0)
    """Learning rate of steps 2 and 4 (paper: 0.1), in the units of each optimizer (see `optimizer`)."""
    iterations: int = option(200, ge=0)
    """Iterations of step 2, and again of step 4 (paper: 200), with solver plain."""
    solver: Solver = "fast"
    """Steps 2 and 4: 'plain', `iterations` steps of `optimizer` and of `adjust_optimizer` (the paper's 200 + 200), or
    'fast' (see `solve`): step 2 gradient descent with the same lr x iterations / L flow in steps of 1/L, step 4
    Adam with step fast_lr for fast_iterations and a conjugate-gradient refit on its mask; a step whose optimiser is
    not the default runs plain."""
    fast_lr: float = option(0.4, gt=0)
    """solver fast: step 4's Adam step, in units of rms(W_d)."""
    fast_iterations: int = option(50, ge=0)
    """solver fast: at most this many Adam iterations in step 4."""
    polish: int = option(10, ge=0)
    """solver fast: at most this many conjugate-gradient iterations refitting step 4's result on its mask."""
    tol: float = option(1e-3, ge=0)
    """solver fast: a step stops once its best objective improved less than this, relative, over `window` iterations."""
    window: int = option(10, ge=1)
    """solver fast: the iterations over which progress is judged."""
    optimizer: Optimizer = "gd"
    """Step 2's optimiser. 'gd': gradient descent with step lr/L, L = 2c lambda_max(H) the loss's largest curvature
    (scale-free; stable for lr < 1); 'adam': Adam (torch's update, default betas) with step lr * rms(W_d);
    'sgd': gradient descent with the raw step lr (the literal reading: with loss 'sum' and lr 0.1 it diverges)."""
    adjust_optimizer: Optimizer = "adam"
    """Step 4's optimiser, as `optimizer`."""
    damp: float = option(0.01, ge=0)
    """Steps 2 and 4 fit with the Gram H + damp * mean(diag H) * I, as SparseGPT damps its Hessian (percdamp 0.01):
    a weight on an input the calibration hardly excites is held near its dense value instead of drifting freely
    (docs/sds.md: one such input cost 13% perplexity). 0 is the loss exactly as the paper writes it."""
    loss: Literal["sum", "relative"] = "sum"
    """'sum': the formula as written, squared error summed over calibration tokens plus raw penalties; 'relative':
    every term over its dense-layer value (error over ||W_d X||^2, norms over ||W_d||), so lambda is scale-free."""
    keep_better: bool = False
    """Per layer, return P's one-shot result instead when its reconstruction error is lower."""
    histograms: str = "*.layers.0.*"
    """Comma-separated globs of layer names whose weight histograms are recorded ('' for none)."""
    bins: int = option(64, ge=1)
    """Bins of each recorded histogram."""


def sds(weight: torch.Tensor, stats: LayerStats, sparsity: Sparsity, options: SDSOptions,
        P: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Prune one Linear by Sparse-Dense-Sparse around the base pruner P (bound to this layer by the registry's
    `Refinement.pruner`); record each step's error (and chosen histograms)."""
    W = W_d = weight.float()
    H = stats.gram
    steps, iterations = {"dense": W_d}, {}
    if options.initial_prune:
        W = steps["initial_prune"] = P(weight).float()
    if options.redense:
        H_re = stats.dense_gram if options.redense_data == "dense" else H
        objective = Objective(W_d, H_re, stats.nsamples, options, options.optimizer)
        W, iterations["redense"] = solve("redense", W, objective, sparsity)
        steps["redense"] = W
    if options.second_prune:
        W = steps["second_prune"] = P(W).float()
    if options.adjust and stats.model_params < options.adjust_max_params:
        objective = Objective(W_d, H, stats.nsamples, options, options.adjust_optimizer)
        W, iterations["adjust"] = solve("adjust", W, objective, sparsity)
        steps["adjust"] = W
    elif not satisfies(W, sparsity):
        W = steps["projection"] = project(W, sparsity)
    errors = {k: error(v, W_d, H) for k, v in steps.items() if k != "dense"}
    if options.keep_better and errors.get("initial_prune", math.inf) < list(errors.values())[-1]:
        W = steps["initial_prune"]
    record(stats, {**steps, "final": W}, errors, options)
    stats.record["sds_iterations"] = iterations
    return W.to(weight.dtype)


def solve(step: Literal["redense", "adjust"], W: torch.Tensor, objective: Objective,
          sparsity: Sparsity) -> tuple[torch.Tensor, int]:
    """Step 2 or 4 by the chosen solver: the result and the products [out, in] x [in, in] it used.

    'fast': step 2 runs the plain solver's gradient flow (lr x iterations steps of 1/L, L the largest curvature) in
    steps of the full 1/L, so in lr x iterations iterations; step 4 runs Adam at the larger step fast_lr (its mask
    moves further per step) for fast_iterations (Adam first climbs away from W_2, so progress does not tell when to
    stop), then refits the best iterate's weights on its mask by conjugate gradients (`refit`, at most `polish`
    iterations). Step 2 and the refit stop once their objective improved less than tol, relative, over `window`
    iterations."""
    o = objective.options
    if o.solver == "plain" or objective.kind != ("gd" if step == "redense" else "adam"):
        return redense(W, objective) if step == "redense" else adjust(W, objective, sparsity)
    stop = functools.partial(converged, tol=o.tol, window=o.window)
    if step == "redense":
        return redense(W, objective.with_steps("gd", 1.0, round(o.lr * o.iterations)), stop)
    W, used = adjust(W, objective.with_steps("adam", o.fast_lr, o.fast_iterations), sparsity)
    W, polished = refit(W, objective, o.polish, stop)
    return W, used + polished


def converged(history: list[float], tol: float, window: int) -> bool:
    """Whether the best objective so far improved less than tol, relative, over the last `window` iterations."""
    return len(history) > window and min(history[: -window]) - min(history) <= tol * abs(min(history))


def refit(W: torch.Tensor, objective: Objective, iterations: int,
          stop: Callable[[list[float]], bool]) -> tuple[torch.Tensor, int]:
    """Minimise the (damped) error over the weights W's mask keeps, the mask fixed, by conjugate gradients
    preconditioned by the damped Gram's diagonal, every row at once (each its own step sizes); returns the result and
    the products used. The error only falls, and each iteration's follows from quantities CG computes anyway."""
    if not iterations:
        return W, 0
    H, mask = objective.H, W != 0
    d = (torch.diagonal(H) + objective.damping).clamp_min(torch.finfo(H.dtype).tiny)
    delta = W - objective.W_d
    G = objective.product(delta)
    err = float((G * delta).sum())
    R = G.neg_().masked_fill_(~mask, 0)
    Z = R / d
    P, rz, history = Z.clone(), (R * Z).sum(1, keepdim=True), [err]
    for i in range(iterations):
        if stop(history):
            return W, i + 1
        AP = objective.product(P).masked_fill_(~mask, 0)
        alpha = rz / (P * AP).sum(1, keepdim=True).clamp_min(torch.finfo(H.dtype).tiny)
        err += float((alpha.square() * (P * AP).sum(1, keepdim=True) - 2 * alpha * (P * R).sum(1, keepdim=True)).sum())
        history.append(err)
        W, R = W + alpha * P, R - alpha * AP
        Z = R / d
        rz, rz_prev = (R * Z).sum(1, keepdim=True), rz
        P = Z + rz / rz_prev.clamp_min(torch.finfo(H.dtype).tiny) * P
    return W, iterations + 1


def redense(W_s: torch.Tensor, objective: Objective,
            stop: Callable[[list[float]], bool] | None = None) -> tuple[torch.Tensor, int]:
    """Step 2: from W_s, every weight free, minimise ||W_d X - W X||^2 + l1 ||W||_1 + l2 ||W||_2; the result and the
    iterations run (fewer than `iterations` once `stop`, given the objective after each, says so)."""
    W, history, o = W_s.clone(), [], objective.options
    step = objective.stepper(W)
    for i in range(o.iterations):
        grad, err = objective.reconstruction(W)
        if stop is not None:
            history.append(objective.c * float(err) + (objective.penalty(W) if o.regularize else 0.0))
            if stop(history):
                return finite(W), i
        step(grad.add_(objective.penalty_grad(W)) if o.regularize else grad)
    return finite(W), o.iterations


def finite(W: torch.Tensor) -> torch.Tensor:
    """W, after checking that step 2 did not diverge."""
    if not torch.isfinite(W).all():
        raise UserError("sds: the re-dense step diverged (non-finite weights); lower lr, or use optimizer gd or adam")
    return W


def adjust(W_2: torch.Tensor, objective: Objective, sparsity: Sparsity) -> tuple[torch.Tensor, int]:
    """Step 4: minimise ||W_d X - (M*W) X||^2 from W_2, M re-selected by magnitude under the pattern every iteration;
    returns the iterate of least error, so the step never ends worse than it started, and the products used."""
    W = project(W_2, sparsity)
    best, best_error = W.clone(), math.inf
    step = objective.stepper(W)
    for i in range(objective.options.iterations + 1):
        grad, err = objective.reconstruction(W)
        if err < best_error:
            best, best_error = W.clone(), err
        if i < objective.options.iterations:
            step(grad)
            W.copy_(project(W, sparsity))
    return best, objective.options.iterations + 1


def project(W: torch.Tensor, sparsity: Sparsity) -> torch.Tensor:
    """M*W, M keeping the largest |W| under the target pattern: the N smallest of every M zeroed, or (unstructured)
    every |W| up to the k-th smallest, k = int(numel*s), found by linear-time selection, several times faster than
    the sort of an exact count; only ties with the k-th value (zeros, in practice) can add zeros."""
    score = W.abs()
    if sparsity.is_nm:
        return W.masked_fill(pattern_mask(score, sparsity), 0)
    k = int(W.numel() * sparsity.ratio)
    return W.masked_fill(score <= score.flatten().kthvalue(k).values, 0) if k else W


def error(W: torch.Tensor, W_d: torch.Tensor, H: torch.Tensor) -> float:
    """Reconstruction error tr((W - W_d) H (W - W_d)^T), the Gram's own scale (stats.GRAM)."""
    delta = W - W_d
    return float(((delta @ H) * delta).sum())


ADAM_BETAS = (0.9, 0.999)
"""torch.optim.Adam's defaults: the decay rates of the first and second moment estimates."""
ADAM_EPS = 1e-8
"""torch.optim.Adam's default: added to the second moment's root so that a zero gradient does not divide by zero."""


def loss_scale(W_d: torch.Tensor, H: torch.Tensor, nsamples: int, relative: bool) -> tuple[float, tuple[float, float]]:
    """The loss's scale c on tr((W - W_d) H (W - W_d)^T) and the penalties' norms (||W_d||_1, ||W_d||_2): c = N/2 for
    the literal sum over tokens (see stats.GRAM), or 1/||W_d X||^2 and W_d's own norms when relative."""
    if relative:
        return 1 / (error(torch.zeros_like(W_d), W_d, H) or 1.0), (float(W_d.abs().sum()), float(W_d.norm()))
    return nsamples / 2, (1.0, 1.0)


def step_size(optimizer: Optimizer, lr: float, c: float, W_d: torch.Tensor, H: torch.Tensor, damping: float) -> float:
    """GD: a fraction lr of 1/L, L = 2c lambda_max(H + damping I) the curvature along H's top axis; Adam, whose steps
    are about lr in size: lr in units of the dense weights' rms; SGD: lr as given."""
    if optimizer == "gd":
        return lr / (2 * c * ((largest_eigenvalue(H) + damping) or 1.0))
    if optimizer == "adam":
        return lr * float(W_d.pow(2).mean().sqrt())
    return lr


def adam_stepper(W: torch.Tensor, lr: float) -> Callable[[torch.Tensor], None]:
    """Adam on W in place, exactly as torch's, without torch.optim's per-step overhead (it dominates on small layers)."""
    (b1, b2), m, v, t = ADAM_BETAS, torch.zeros_like(W), torch.zeros_like(W), [0]

    def step(grad: torch.Tensor) -> None:
        t[0] += 1
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        W.addcdiv_(m, (v / (1 - b2 ** t[0])).sqrt_().add_(ADAM_EPS), value=-lr / (1 - b1 ** t[0]))

    return step


class Objective:
    """One layer's step-2/4 loss c tr((W - W_d) (H + damping I) (W - W_d)^T) + penalties, normalised per `loss`, and
    its optimiser."""

    def __init__(self, W_d: torch.Tensor, H: torch.Tensor, nsamples: int, options: SDSOptions, optimizer: Optimizer):
        self.W_d, self.H, self.nsamples, self.options, self.kind = W_d, H, nsamples, options, optimizer
        self.c, self.norms = loss_scale(W_d, H, nsamples, options.loss == "relative")
        self.damping = options.damp * float(torch.diagonal(H).mean()) if options.damp else 0.0

    @functools.cached_property
    def lr(self) -> float:
        """The optimiser's step (see step_size), computed on first use (the power iteration is not free)."""
        return step_size(self.kind, self.options.lr, self.c, self.W_d, self.H, self.damping)

    def product(self, M: torch.Tensor) -> torch.Tensor:
        """M (H + damping I), a new tensor: the one [out, in] x [in, in] product of an iteration."""
        return (M @ self.H).add_(M, alpha=self.damping) if self.damping else M @ self.H

    def with_steps(self, optimizer: Optimizer, lr: float, iterations: int) -> Objective:
        """The same loss with another optimiser, learning rate and iteration count (the fast solver's)."""
        return Objective(self.W_d, self.H, self.nsamples, replace(self.options, lr=lr, iterations=iterations), optimizer)

    def penalty(self, W: torch.Tensor) -> float:
        """l1 ||W||_1 + l2 ||W||_2 (or ||W||_2^2), each over its dense value when relative."""
        o, (n1, n2) = self.options, self.norms
        norm = float(W.norm()) / n2
        return o.l1 * float(W.abs().sum()) / n1 + o.l2 * (norm**2 if o.l2_squared else norm)

    def reconstruction(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient 2c (W - W_d) (H + damping I) of the reconstruction term, and its error (0-dim), from one
        matrix product."""
        delta = W - self.W_d
        G = self.product(delta)
        return G.mul_(2 * self.c), (G * delta).sum() / (2 * self.c)

    def penalty_grad(self, W: torch.Tensor) -> torch.Tensor:
        """(Sub)gradient of l1 ||W||_1 + l2 ||W||_2 (or ||W||_2^2), each over its dense value when relative."""
        o, (n1, n2) = self.options, self.norms
        l2 = 2 / n2**2 if o.l2_squared else 1 / (float(W.norm()) * n2 or 1e-30)
        return torch.sign(W).mul_(o.l1 / n1).add_(W, alpha=o.l2 * l2)

    def stepper(self, W: torch.Tensor) -> Callable[[torch.Tensor], None]:
        """One step of the chosen optimiser on W, in place, given the gradient: Adam, or (S)GD W -= lr grad."""
        if self.kind == "adam":
            return adam_stepper(W, self.lr)
        return lambda grad: W.sub_(grad, alpha=self.lr)


def largest_eigenvalue(H: torch.Tensor, iterations: int = 100) -> float:
    """lambda_max of the PSD Gram by power iteration (cheap next to one step; eigvalsh costs seconds on large H)."""
    v = torch.ones(H.shape[0], dtype=H.dtype, device=H.device)
    for _ in range(iterations):
        v = H @ v
        v = v / v.norm().clamp_min(1e-30)
    return float(v @ H @ v)


def record(stats: LayerStats, steps: dict[str, torch.Tensor], errors: dict[str, float], options: SDSOptions) -> None:
    """Into the layer's record: the error after each step and of the result, ||W_d X||^2 in the same scale (the error
    of pruning everything), and for chosen layers the weight histograms."""
    W_d, H = steps["dense"], stats.gram
    stats.record["sds_error"] = {**errors, "final": error(steps["final"], W_d, H)}
    stats.record["sds_dense_energy"] = error(torch.zeros_like(W_d), W_d, H)
    if any(fnmatch.fnmatch(stats.name, g.strip()) for g in options.histograms.split(",") if g.strip()):
        stats.record["sds_histograms"] = histograms({k: steps[k] for k in HISTOGRAM_STAGES if k in steps}, options.bins)


def histograms(stages: dict[str, torch.Tensor], bins: int) -> dict[str, Any]:
    """Histograms of each stage's nonzero weights on shared bins over [-max|W|, max|W|], and its number of zeros."""
    bound = float(max(W.abs().max() for W in stages.values()))
    return {"range": [-bound, bound], "bins": bins,
            "stages": {k: {"counts": torch.histc(W[W != 0], bins, -bound, bound).long().tolist(),
                           "zeros": int((W == 0).sum()), "numel": W.numel()} for k, W in stages.items()}}


def needs(options: SDSOptions) -> set[str]:
    """The Gram of steps 2 and 4, and the dense model's Gram when step 2 uses dense inputs (P's come on top)."""
    return {GRAM} | ({DENSE_GRAM} if options.redense_data == "dense" else set())


@hookimpl
def register_refinements(register):
    register(Refinement("sds", "SDS (Sparse-Dense-Sparse, Li et al. 2025)", refine=sds, needs=needs,
                        options=SDSOptions))
