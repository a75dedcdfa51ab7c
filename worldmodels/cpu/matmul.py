"""Linear layers on the CPU through oneDNN instead of MKL, where that is faster.

PyTorch runs a float32 `F.linear` on the CPU as an MKL GEMM. On the 2-core AMD EPYC (Zen 4) machine
the benchmarks ran on, MKL reaches about 177 GFLOP/s forward on the update's biggest head layer
(16384 x 2560 -> 256) and 93 on the two-hot output layers (256 -> 255), while oneDNN (also inside
PyTorch, as `mkldnn._linear_pointwise`) reaches 217 and 191 (`python benchmarks/matmul.py`). oneDNN costs about 15 us
more per call, so products under `MIN_MACS` multiply-adds stay with MKL.

The forward pass and the input gradient run through oneDNN; the weight gradient stays an MKL GEMM,
which measured as fast or faster there. The op is a `torch.library` custom op, so torch.compile keeps it
as one opaque call (inductor's own lowering of the mkldnn op is for inference with packed weights only).
"""

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

MIN_MACS = 1 << 22  # rows * inputs * outputs below which MKL's lower per-call cost wins


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_enabled = available()  # on wherever the op exists; set_onednn(False) turns it off


def set_onednn(enabled: bool) -> None:
    """Route big float32 CPU linear layers through oneDNN (the default) or leave them all to MKL."""
    global _enabled
    _enabled = bool(enabled) and available()


def onednn_enabled() -> bool:
    return _enabled


@torch.library.custom_op("worldmodels::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (N, I) @ weight (O, I)^T + bias, both 2-D; weight may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@onednn_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


def weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A linear layer's weight gradient grad^T @ x ((O, I) from (N, O) and (N, I)), computed as the
    transpose of x^T @ grad. In isolation MKL ran that order at 181 against 144 GFLOP/s for 1024 rows of
    2048 inputs into 256 outputs, and 183 against 158 for 15360 rows; in the whole compiled size12m update
    it saved 10 to 30 ms (two in-process A/B runs, medians 2.55 / 2.57 against 2.58 s)."""
    return (x.t() @ grad).t()


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad: torch.Tensor):
    x, weight = ctx.saved_tensors
    grad = grad.contiguous()
    grad_x = onednn_linear(grad, weight.t(), None) if ctx.needs_input_grad[0] else None
    grad_w = weight_grad(grad, x) if ctx.needs_input_grad[1] else None
    grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b


onednn_linear.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.worldmodels.onednn_linear)
def _flops(x_shape, w_shape, *args, **kwargs) -> int:
    """So that FlopCounterMode (benchmarks/speed.py) counts these matmuls like F.linear's."""
    return 2 * x_shape[0] * x_shape[1] * w_shape[0]


def dense(weight: torch.Tensor) -> bool:
    """Whether oneDNN takes the weight as it is: contiguous, or the transpose of a contiguous matrix.
    Other strides (a column slice of a wider weight) send it down a reference kernel: 1024 x 2048 -> 256
    took 6.9 s there against 5 ms after a copy. A strided input is copied first; MKL reads it in place."""
    return weight.is_contiguous() or weight.t().is_contiguous()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through oneDNN for big float32 products on the CPU (see the module docstring)."""
    rows = x.shape[:-1].numel()
    if (
        not _enabled
        or x.shape[-1] == 0
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or rows * weight.shape[0] * weight.shape[1] < MIN_MACS
        or torch.is_autocast_enabled("cpu")
        or not dense(weight)
        or not x.is_contiguous()
    ):
        return F.linear(x, weight, bias)
    y = onednn_linear(x.reshape(rows, x.shape[-1]), weight, bias)
    return y.reshape(*x.shape[:-1], weight.shape[0])
