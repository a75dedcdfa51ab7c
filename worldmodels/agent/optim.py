"""LaProp-style optimiser with adaptive gradient clipping, DreamerV3's single optimiser."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LaProp(torch.optim.Optimizer):
    """Adaptive gradient clipping, then RMS scaling, then momentum (LaProp order), with linear warm-up.

    Per tensor: g <- g / max(1, |g| / (agc * max(1e-3, |p|))); v <- b2 v + (1 - b2) g^2;
    m <- b1 m + (1 - b1) g / (sqrt(v_hat) + eps); p <- p - lr * warmup(t) * m_hat.
    Normalising before the momentum keeps the step size bounded even for rare large gradients,
    and clipping relative to the parameter norm needs no tuning across model sizes.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 4e-5,
        eps: float = 1e-20,
        beta1: float = 0.9,
        beta2: float = 0.999,
        agc: float = 0.3,
        warmup: int = 1000,
    ):
        super().__init__(params, {"lr": lr, "eps": eps, "beta1": beta1, "beta2": beta2, "agc": agc, "warmup": warmup})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            b1, b2 = group["beta1"], group["beta2"]
            for p in params:
                state = self.state[p]
                if not state:
                    state["mom"] = torch.zeros_like(p)
                    state["rms"] = torch.zeros_like(p)
            if group["agc"]:
                pnorm = torch._foreach_norm(params)
                gnorm = torch._foreach_norm(grads)
                limit = [group["agc"] * torch.clamp(pn, min=1e-3) for pn in pnorm]
                factor = [1.0 / torch.clamp(gn / lim, min=1.0) for gn, lim in zip(gnorm, limit)]
                grads = torch._foreach_mul(grads, factor)
            # One count per group (saved with the param groups), so a parameter that joins late
            # cannot restart the warm-up and bias correction of the others.
            group["step"] = t = group.get("step", 0) + 1
            rms = [self.state[p]["rms"] for p in params]
            mom = [self.state[p]["mom"] for p in params]
            torch._foreach_mul_(rms, b2)
            torch._foreach_addcmul_(rms, grads, grads, value=1 - b2)
            denom = torch._foreach_sqrt(torch._foreach_div(rms, 1 - b2**t))
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_mul_(mom, b1)
            torch._foreach_addcdiv_(mom, grads, denom, value=1 - b1)
            warm = min(1.0, t / group["warmup"]) if group["warmup"] else 1.0
            torch._foreach_add_(params, mom, alpha=-group["lr"] * warm / (1 - b1**t))
