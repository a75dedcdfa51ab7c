"""LaProp-style optimiser with adaptive gradient clipping, DreamerV3's single optimiser."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


class LaProp(torch.optim.Optimizer):
    """Adaptive gradient clipping, then RMS scaling, then momentum (LaProp order), with linear warm-up.

    Per tensor: g <- g / max(1, |g| / (agc * max(1e-3, |p|))); v <- b2 v + (1 - b2) g^2;
    m <- b1 m + (1 - b1) g / (sqrt(v_hat) + eps); p <- p - lr * warmup(t) * m_hat.
    Normalising before the momentum keeps the step size bounded even for rare large gradients,
    and clipping relative to the parameter norm needs no tuning across model sizes.

    The state lives on the parameters' device, the step count included, so a step never reads the device
    back: `apply(grads, finite)` takes the step where the 0-d bool `finite` holds and leaves every parameter,
    moment and count unchanged where it does not (a `torch.where`, decided on the device, not a Python `if`).
    That makes the whole update one function without host synchronisation, which `torch.compile` can take as
    one graph and CUDA can replay as one graph.
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
        self.init_state()

    def init_state(self) -> None:
        """Moments of zeros and a step count of 0, made up front (not on the first step): a compiled step then
        finds every tensor it writes already there. Called again after loading a state dict."""
        for group in self.param_groups:
            device = group["params"][0].device if group["params"] else None
            step = group.get("step", 0)
            # float64 keeps the bias corrections as exact as Python floats did (MPS has no float64).
            dtype = torch.float32 if device is not None and torch.device(device).type == "mps" else torch.float64
            if not torch.is_tensor(step) or step.device != device or step.dtype != dtype:
                # One count per group (saved with the param groups), so a parameter that joins late cannot restart
                # the warm-up and bias correction of the others. A tensor on the device; checkpoints before 0.5 hold
                # a Python int.
                group["step"] = torch.tensor(float(step), dtype=dtype, device=device)
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["rms"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self.init_state()

    @torch.no_grad()
    def step(self, closure=None):
        """The step from the parameters' `.grad` (those without one are left alone)."""
        self.apply([p.grad for group in self.param_groups for p in group["params"]])

    @torch.no_grad()
    def apply(self, grads: Sequence[torch.Tensor | None], finite: torch.Tensor | None = None) -> None:
        """One step with `grads`, one per parameter in param-group order (None: that parameter is left alone),
        taken only where the 0-d bool tensor `finite` is true (None: always)."""
        grads = list(grads)
        offset = 0
        for group in self.param_groups:
            own = grads[offset : offset + len(group["params"])]
            offset += len(group["params"])
            pairs = [(p, g) for p, g in zip(group["params"], own) if g is not None]
            if pairs:
                self._group_step(group, [p for p, _ in pairs], [g for _, g in pairs], finite)
        if offset != len(grads):
            raise ValueError(f"{len(grads)} gradients for {offset} parameters")

    def _group_step(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor], finite: torch.Tensor | None) -> None:
        """The step of one group, in place. Where `finite` is false the gradients count as zeros and the decay rates
        and step size as 1, 1 and 0, so every moment, parameter and the count come out exactly as they were (x * 1 + 0
        is x): the skip costs one `where` per gradient, not a second copy of the state."""
        b1, b2 = group["beta1"], group["beta2"]
        if finite is None:
            take = torch.ones((), dtype=group["step"].dtype, device=group["step"].device)
        else:
            take = finite.to(group["step"].dtype)
            grads = [torch.where(finite, g, torch.zeros_like(g)) for g in grads]
        if group["agc"]:
            pnorm = torch._foreach_norm(params)
            gnorm = torch._foreach_norm(grads)
            limit = [group["agc"] * torch.clamp(pn, min=1e-3) for pn in pnorm]
            factor = [1.0 / torch.clamp(gn / lim, min=1.0) for gn, lim in zip(gnorm, limit)]
            grads = torch._foreach_mul(grads, factor)
        count = group["step"] + take
        torch._foreach_copy_([group["step"]], [count])  # (an in-place add_ on it was lost under torch.compile)
        t = count.clamp(min=1.0)  # the bias corrections of a first step that was skipped stay finite
        rms = [self.state[p]["rms"] for p in params]
        mom = [self.state[p]["mom"] for p in params]
        torch._foreach_mul_(rms, 1.0 - (1.0 - b2) * take)  # b2, or 1 on a skipped step
        torch._foreach_addcmul_(rms, grads, grads, value=1 - b2)
        denom = torch._foreach_div(rms, 1 - b2**t)  # the bias corrections are 0-d tensors: no host read
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_mul_(mom, 1.0 - (1.0 - b1) * take)  # b1, or 1 on a skipped step
        torch._foreach_addcdiv_(mom, grads, denom, value=1 - b1)
        warm = torch.clamp(t / group["warmup"], max=1.0) if group["warmup"] else 1.0
        size = (-group["lr"] * warm / (1 - b1**t) * take).to(params[0].dtype)
        torch._foreach_add_(params, torch._foreach_mul(mom, size))
