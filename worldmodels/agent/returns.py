"""Lambda returns and percentile return normalisation."""

from __future__ import annotations

import torch
from torch import nn


def lambda_return(rew: torch.Tensor, boot: torch.Tensor, disc: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """TD(lambda) returns over a trajectory of T + 1 states.

    ret[t] = rew[t+1] + disc[t+1] * ((1 - lam[t+1]) * boot[t+1] + lam[t+1] * ret[t+1]), ret[T] = boot[T].

    Args:
        rew: (B, T+1) reward received on arriving at each state (rew[0] unused).
        boot: (B, T+1) value estimates to bootstrap from.
        disc: (B, T+1) discount times the probability of continuing at each state.
        lam: (B, T+1) lambda, set to 0 where the episode was cut (is_last) so nothing leaks past it.
    Returns:
        (B, T) returns for states 0 .. T-1.
    """
    assert rew.shape == boot.shape == disc.shape == lam.shape, (rew.shape, boot.shape, disc.shape, lam.shape)
    interm = rew[:, 1:] + disc[:, 1:] * (1 - lam[:, 1:]) * boot[:, 1:]
    scale = disc[:, 1:] * lam[:, 1:]
    ret = boot[:, -1]
    rets = []
    for t in reversed(range(rew.shape[1] - 1)):
        ret = interm[:, t] + scale[:, t] * ret
        rets.append(ret)
    return torch.stack(rets[::-1], 1)


class ReturnNorm(nn.Module):
    """EMA of the 5th and 95th return percentiles; scale = max(limit, P95 - P5).

    Dividing advantages by this range (never below 1) makes the entropy bonus mean the same thing
    across reward scales while not amplifying noise when returns are small.
    """

    def __init__(self, rate: float = 0.01, limit: float = 1.0, low: float = 0.05, high: float = 0.95):
        super().__init__()
        self.rate, self.limit, self.low, self.high = rate, limit, low, high
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    @torch.no_grad()
    def moved(self, ret: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The percentile estimates (lo, hi) after taking in the returns `ret`, without storing them; the
        current ones where `ret` is not all finite (a diverged batch must not move the statistics). Decided on
        the device: nothing is read back."""
        flat = ret.detach().reshape(-1).float()
        qs = torch.quantile(flat, torch.tensor([self.low, self.high], device=flat.device))
        ok = torch.isfinite(flat).all()
        lo = torch.where(ok, torch.lerp(self.lo, qs[0], self.rate), self.lo)
        hi = torch.where(ok, torch.lerp(self.hi, qs[1], self.rate), self.hi)
        return lo, hi

    @torch.no_grad()
    def store(self, lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Store estimates from `moved`, where the 0-d bool `keep` holds (None: always)."""
        if keep is not None:
            lo, hi = torch.where(keep, lo, self.lo), torch.where(keep, hi, self.hi)
        self.lo.copy_(lo)
        self.hi.copy_(hi)

    def update(self, ret: torch.Tensor) -> None:
        self.store(*self.moved(ret))

    def scale(self, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> torch.Tensor:
        """max(limit, hi - lo) of the stored estimates, or of the given ones."""
        lo = self.lo if lo is None else lo
        hi = self.hi if hi is None else hi
        return torch.clamp(hi - lo, min=self.limit)
