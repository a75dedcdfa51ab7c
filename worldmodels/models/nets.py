"""Small network blocks shared by the world model and the actor-critic."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def init_linear_(weight: torch.Tensor, fan_in: int, scale: float = 1.0) -> None:
    """Truncated normal with std scale * sqrt(1 / fan_in), as in DreamerV3 (clipped at 2 std).

    `scale` multiplies the weights, like the official `outscale` (the actor's output layer: 0.01)."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # undo the variance lost by truncation at 2 std
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
    with torch.no_grad():
        weight.mul_(scale)


class Linear(nn.Linear):
    """nn.Linear with DreamerV3's initialisation; `zero=True` starts the output at exactly zero."""

    def __init__(self, inp: int, out: int, bias: bool = True, zero: bool = False, fan_in: int | None = None, scale: float = 1.0):
        super().__init__(inp, out, bias=bias)
        if zero:
            nn.init.zeros_(self.weight)
        else:
            init_linear_(self.weight, fan_in or inp, scale)
        if bias:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class BlockLinear(nn.Module):
    """Block-diagonal linear layer: `blocks` independent maps from (inp/blocks) to (out/blocks) features.

    Keeps a wide recurrent state cheap: parameters and FLOPs shrink by the number of blocks.
    Input (..., inp) -> output (..., out). As in the official initialiser, the fan-in is the layer's whole
    input width `inp` (blocks x per-block input), not one block's; `fan_in` overrides it.
    """

    def __init__(self, inp: int, out: int, blocks: int, bias: bool = True, fan_in: int | None = None):
        super().__init__()
        if inp % blocks or out % blocks:
            raise ValueError(f"BlockLinear sizes {inp} -> {out} must be divisible by blocks={blocks}")
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, inp // blocks, out // blocks))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None
        init_linear_(self.weight, fan_in or inp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.grouped(x)
        return y.reshape(*y.shape[:-2], -1)

    def grouped(self, x: torch.Tensor, detach_weight: bool = False) -> torch.Tensor:
        """Output as (..., blocks, out/blocks), left in the batched matmul's block-major memory order.

        Reshaping it to (..., out) copies it; callers that work per block (the GRU gates) or that add
        a contiguous tensor first (whose layout the sum then takes) avoid that copy.
        """
        lead = x.shape[:-1]
        weight = self.weight.detach() if detach_weight else self.weight
        x = x.reshape(-1, self.blocks, x.shape[-1] // self.blocks).transpose(0, 1)  # (G, N, I)
        if self.bias is None:
            y = torch.bmm(x, weight)
        elif torch.compiler.is_compiling():
            # Inductor folds the add into the elementwise kernel that reads y next; baddbmm would first
            # copy the broadcast bias into the whole output (14 ms per size12m update for the GRU gates).
            y = torch.bmm(x, weight) + self.bias.view(self.blocks, 1, -1)
        else:  # eager: the bias is added inside the matmul, not as a pass over the (strided) output
            y = torch.baddbmm(self.bias.view(self.blocks, 1, -1), x, weight)
        y = y.transpose(0, 1)  # (N, G, O), stored (G, N, O)
        return y.reshape(*lead, *y.shape[-2:])


class RMSNorm(nn.Module):
    """RMS normalisation with a learned scale (DreamerV3's default `norm: rms`)."""

    def __init__(self, dim: int, eps: float = 1e-4):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.scale, self.eps)


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * scale


def rms_silu(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """SiLU(RMSNorm(x)): the normalisation and activation of a NormAct as one function to compile."""
    return torch.nn.functional.silu(rms_norm(x, scale, eps))


# Even with dynamic shapes, dynamo compiles `rms_silu` anew for each norm width (parameters keep static
# shapes), grad mode, `requires_grad` of the scale (the slow critic's is off) and size-1 dimension (acting):
# five versions for one model size. Past dynamo's default limit of 8 per function (reached by a second
# model size in one process, as in benchmarks/speed.py) it warns and runs the rest eagerly, unfused.
RMS_SILU_SPECIALISATIONS = 64


def recompile_limit_name() -> str:
    """The name of dynamo's per-function limit of compiled versions in this torch."""
    import torch._dynamo

    return "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"  # its older name


def _raise_recompile_limit(limit: int) -> None:
    """Raise dynamo's per-function limit of compiled versions to at least `limit` (never lower it)."""
    name = recompile_limit_name()
    setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))


_compiled_rms_silu = None


def compiled_rms_silu():
    """`rms_silu` through torch.compile, made once per process: inductor fuses its forward into one pass
    and its backward into two, where eager mode makes about five and ten passes over the activations.
    On the 2-core CPU, for a (16384, 256) input: forward 1.9 against 3.3 ms, with backward 6.1 against 14.1."""
    global _compiled_rms_silu
    _raise_recompile_limit(RMS_SILU_SPECIALISATIONS)  # on every call: whoever asks for it gets the room
    if _compiled_rms_silu is None:
        _compiled_rms_silu = torch.compile(rms_silu, dynamic=True)
    return _compiled_rms_silu


class NormAct(nn.Sequential):
    """Linear -> RMSNorm -> SiLU, the unit every DreamerV3 MLP is made of.

    The linear layer keeps its bias, as in the official code: RMSNorm only rescales (no mean is
    subtracted, no shift is learned), so a bias before it still moves the features.
    `norm_act` computes the last two; `run.compile=steps` swaps in the compiled one (worldmodels/strategies/compile.py)."""

    def __init__(self, inp: int, out: int):
        super().__init__(Linear(inp, out), RMSNorm(out), nn.SiLU())
        self.norm_act = rms_silu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear_layer, norm, _ = self
        return self.norm_act(linear_layer(x), norm.scale, norm.eps)


class MLP(nn.Sequential):
    """`layers` NormAct blocks of width `units`; output size is `units` (or `inp` when layers == 0)."""

    def __init__(self, inp: int, units: int, layers: int):
        blocks = [NormAct(inp if i == 0 else units, units) for i in range(layers)]
        super().__init__(*blocks)
        self.out_dim = units if layers else inp
