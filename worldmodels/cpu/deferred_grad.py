"""Weight gradients of layers applied step by step in a recurrence, computed as one matmul per layer.

The observe loop applies each RSSM layer to only B = 16 rows per step. Left to autograd, every step's
backward forms that step's weight gradient as a (out x 16) @ (16 x in) product and adds it into the
weight's .grad: 64 thin products per layer, each rewriting the whole gradient matrix, which ran at 25 to
100 GFLOP/s on the 2-core development CPU against about 180 for one (out x 1024) @ (1024 x in) product.

Here a loop uses the weight detached, so its steps compute only input gradients, and adds to each step's
output a zero "slot" whose gradient is therefore dL/d(output) at that step. The slots are the unbound
rows of one zero tensor made by `DeferredWeightGrad`; autograd stacks their gradients back into one
(T, B, ...) tensor, and this function's backward multiplies it with the stacked step inputs (recorded by
the loop as it runs) into the weight gradient. Values and gradients are those of the plain loop; only
the order of the sums differs.
"""

from __future__ import annotations

import torch


class DeferredWeightGrad(torch.autograd.Function):
    """zeros (T, B, *out) whose backward turns the slot gradients and `inputs` into dL/d`weight`.

    `inputs` is a list the loop fills with the layer's (B, *in) input at each step, detached, before the
    backward pass runs. A dense weight is (out, in); a block-diagonal one is (G, in/G, out/G) with
    inputs (B, G, in/G) and slots (B, G, out/G).
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, inputs: list, shape: tuple[int, ...]) -> torch.Tensor:
        ctx.inputs = inputs
        ctx.block = weight.dim() == 3
        return weight.new_zeros(shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x = torch.stack(ctx.inputs).to(grad.dtype)  # one dtype for the product, also after a bf16 autocast forward
        ctx.inputs.clear()  # the recorded inputs are only needed once
        if ctx.block:  # (T, B, G, O) and (T, B, G, I) -> (G, I, O)
            grad_w = torch.bmm(x.flatten(0, 1).transpose(0, 1).transpose(1, 2), grad.flatten(0, 1).transpose(0, 1))
        else:  # (T, B, O) and (T, B, I) -> (O, I)
            grad_w = grad.flatten(0, -2).t() @ x.flatten(0, -2)
        return grad_w, None, None


def deferred_slots(weight: torch.Tensor, steps: int, rows: int, inputs: list) -> tuple[torch.Tensor, ...]:
    """`steps` zero slots, each shaped like the layer's output on `rows` rows: (rows, out) for a dense
    weight (out, in), (rows, G, out/G) for a block weight (G, in/G, out/G)."""
    out = (weight.shape[0], weight.shape[2]) if weight.dim() == 3 else (weight.shape[0],)
    return DeferredWeightGrad.apply(weight, inputs, (steps, rows, *out)).unbind(0)
