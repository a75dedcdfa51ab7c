"""Linear layers on a few rows with the weight packed once into oneDNN's blocked layout.

The observe loop multiplies 16 rows by the same RSSM weights at each of its 64 steps. oneDNN reorders a
plain weight into its blocked layout inside every call, which for 16 rows costs about as much as the
product itself: on the 2-core development CPU, 16 x 2048 -> 256 ran at 118 GFLOP/s with a plain weight and
168 with one packed beforehand (`torch.ops.mkldnn._reorder_linear_weight`), and 89 against 147 when other
work evicts the caches between calls, as the loop does.

`packed_linear(x, weight, bias, handle)` keeps the packed weight (and, for the input gradient, the packed
transpose) in a cache entry owned by `handle`, repacked whenever the weight's version counter says it
was written to (the optimiser step). It is a `torch.library` custom op, so torch.compile calls it as one
opaque op and the cache stays out of the graph.
"""

from __future__ import annotations

import itertools
import weakref

import torch
from torch.utils.flop_counter import register_flop_formula

_cache: dict[tuple[int, bool], tuple[tuple, torch.Tensor, torch.Tensor]] = {}  # (handle, transposed) -> key, packed, alias
_handles = itertools.count()


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def new_handle(owner: object) -> int:
    """A cache slot for one layer, freed with `owner` (the module that holds the layer)."""
    handle = next(_handles)
    weakref.finalize(owner, _forget, handle)
    return handle


def _forget(handle: int) -> None:
    for transposed in (False, True):
        _cache.pop((handle, transposed), None)


def _packed(weight: torch.Tensor, handle: int, transposed: bool, rows: int) -> torch.Tensor:
    """The packed weight, repacked if `weight` is another tensor or was written to since.

    The entry keeps an alias of the weight it was packed from: while it lives, no other tensor can take
    its memory, so an equal data pointer means the same storage, and then the shared version counter
    tells whether it changed."""
    key = (weight.data_ptr(), weight._version, tuple(weight.shape), tuple(weight.stride()))
    entry = _cache.get((handle, transposed))
    if entry is None or entry[0] != key:
        plain = weight.t().contiguous() if transposed else weight.contiguous()
        entry = (key, torch.ops.mkldnn._reorder_linear_weight(plain, rows), weight.detach())
        _cache[(handle, transposed)] = entry
    return entry[1]


@torch.library.custom_op("worldmodels::packed_matmul", mutates_args=())
def _packed_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, handle: int, transposed: bool) -> torch.Tensor:
    """x @ weight^T + bias (or x @ weight when `transposed`, for the input gradient) with the packed weight."""
    return torch.ops.mkldnn._linear_pointwise(x, _packed(weight, handle, transposed, x.shape[0]), bias, "none", [], "")


@_packed_matmul.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, handle: int, transposed: bool) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[1] if transposed else weight.shape[0])


@torch.library.custom_op("worldmodels::packed_linear", mutates_args=())
def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, handle: int) -> torch.Tensor:
    """x (N, I) @ weight (O, I)^T + bias, float32 on the CPU, through the packed weight of `handle`."""
    return _packed_matmul(x, weight, bias, handle, False)


@packed_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, handle: int) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, handle = inputs
    ctx.save_for_backward(x, weight)
    ctx.handle, ctx.has_bias = handle, bias is not None


def _backward(ctx, grad: torch.Tensor):
    x, weight = ctx.saved_tensors
    grad = grad.contiguous()
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = _packed_matmul(grad, weight, None, ctx.handle, True)
    grad_w = grad.t() @ x if ctx.needs_input_grad[1] else None
    grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b, None


packed_linear.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula([torch.ops.worldmodels.packed_linear, torch.ops.worldmodels.packed_matmul])
def _flops(x_shape, w_shape, *args, **kwargs) -> int:
    """So that FlopCounterMode (benchmarks/speed.py) counts these products; it sees the outer op of a
    forward pass and the inner one of a backward pass, never both."""
    return 2 * x_shape[0] * w_shape[0] * w_shape[1]
