"""What the 2:4 benchmark times: the per-shape kernel plan, the end-to-end workloads, and the CLI's choices parsed."""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass

import torch

from sds_bench.errors import UserError
from sds_bench.kernels.shapes import LinearShape, collect_shapes, parse_pairs, parse_shapes
from sds_bench.models import DTYPES

BACKENDS = ("cutlass", "cusparselt", "torchao")
DEFAULT_MODELS = ("facebook/opt-125m", "huggyllama/llama-7b")
DEFAULT_TOKENS = (1, 16, 128, 512, 2048, 8192)
DEFAULT_DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class E2EPlan:
    """End-to-end workloads: prefill at (batch, sequence) sizes, decode of new tokens after a context."""

    prefill: tuple[tuple[int, int], ...] = ((1, 128), (1, 512), (1, 2048), (8, 512))
    decode_batches: tuple[int, ...] = (1, 16)
    context: int = 512
    new_tokens: int = 16
    reps: int = 10

    def workloads(self) -> list[tuple[str, int, int]]:
        """(phase, batch, tokens per sequence) in the order they run."""
        return [("prefill", b, s) for b, s in self.prefill] + [("decode", b, self.context) for b in self.decode_batches]

    def describe(self) -> str:
        prefill = ", ".join(f"{b}x{s}" for b, s in self.prefill) or "none"
        decode = ", ".join(map(str, self.decode_batches)) or "none"
        return (f"end to end: prefill (batch x seq) {prefill}; decode batches {decode}, {self.new_tokens} new tokens "
                f"after {self.context}; {self.reps} repetitions")


@dataclass(frozen=True)
class Plan:
    """What would be timed: each shape at each token count and dtype, dense once and then every sparse backend."""

    shapes: tuple[LinearShape, ...]
    tokens: tuple[int, ...] = DEFAULT_TOKENS
    dtypes: tuple[str, ...] = DEFAULT_DTYPES
    backends: tuple[str, ...] = ("cutlass", "cusparselt")
    models: tuple[str, ...] = ()
    e2e: E2EPlan | None = None

    def cells(self) -> list[tuple[str, LinearShape, int]]:
        """(dtype, shape, tokens) in the order they run."""
        return list(itertools.product(self.dtypes, self.shapes, self.tokens))

    def describe(self) -> str:
        cells = len(self.cells())
        lines = [f"{len(self.shapes)} shapes x {len(self.tokens)} token counts x {len(self.dtypes)} dtypes = {cells} "
                 f"cells: {cells} dense and {cells * len(self.backends)} sparse timings "
                 f"(backends: {', '.join(self.backends)})", f"tokens: {', '.join(map(str, self.tokens))}"]
        lines += [f"  {s.label:>12}  {', '.join(s.models)}" for s in self.shapes]
        return "\n".join(lines + ([self.e2e.describe() + f" for {', '.join(self.models)}"] if self.e2e else []))


def default_backends() -> tuple[str, ...]:
    """Both PyTorch backends, and torchao's 2:4 path when torchao is installed."""
    return ("cutlass", "cusparselt") + (("torchao",) if importlib.util.find_spec("torchao") else ())


def parse_list(text: str, kind: type, name: str, allowed: tuple = ()) -> tuple:
    """A comma-separated option ('1,16,128', 'float16,bfloat16') checked item by item."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    try:
        values = tuple(dict.fromkeys(kind(s) for s in items))
    except ValueError:
        raise UserError(f"bad {name} {text!r}: expected comma-separated {kind.__name__} values") from None
    bad = [v for v in values if (allowed and v not in allowed) or (kind is int and v <= 0)]
    if bad or not values:
        hint = f"; choose from {', '.join(map(str, allowed))}" if allowed else ""
        raise UserError(f"bad {name} {text!r}{hint}")
    return values


def make_plan(models: list[str] | None = None, shapes: str | None = None,
              tokens: str | None = None, dtypes: str | None = None, backends: str | None = None,
              e2e: E2EPlan | None = None) -> Plan:
    """The plan from the CLI's choices: the Linear shapes of models (names, directories) or explicit shapes."""
    if e2e and shapes:
        raise UserError("the end-to-end benchmark needs models (--model or --suite), not --shapes")
    if shapes:
        found, models = parse_shapes(shapes), []
    else:
        models = list(models or DEFAULT_MODELS)
        found = collect_shapes(models)
    half = tuple(k for k, v in DTYPES.items() if v != torch.float32)
    return Plan(shapes=tuple(found),
                tokens=parse_list(tokens, int, "--tokens") if tokens else DEFAULT_TOKENS,
                dtypes=tuple(dict.fromkeys(_dtype_name(d) for d in parse_list(dtypes, str, "--dtype", half)))
                if dtypes else DEFAULT_DTYPES,
                backends=parse_list(backends, str, "--backend", BACKENDS) if backends else default_backends(),
                models=tuple(models), e2e=e2e)


def make_e2e_plan(prefill: str | None = None, decode: str | None = None, context: int = 512, new_tokens: int = 16,
                  reps: int = 10) -> E2EPlan:
    """The end-to-end workloads from the CLI: prefill '1x128,8x512' (batch x sequence), decode batches '1,16'."""
    if min(context, new_tokens) <= 0:
        raise UserError("--context and --new-tokens must be positive")
    return E2EPlan(prefill=tuple(parse_pairs(prefill, "prefill size", "1x2048 (BATCHxSEQLEN)")) if prefill
                   else E2EPlan.prefill,
                   decode_batches=parse_list(decode, int, "--decode") if decode else E2EPlan.decode_batches,
                   context=context, new_tokens=new_tokens, reps=reps)


def _dtype_name(name: str) -> str:
    return next(k for k in DEFAULT_DTYPES if DTYPES[k] == DTYPES[name])
