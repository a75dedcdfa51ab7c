"""Value transforms of DreamerV3: symlog squashing and two-hot regression over fixed bins."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|): compresses large magnitudes while staying linear near 0."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of symlog."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def twohot_bins(num: int = 255, limit: float = 20.0) -> torch.Tensor:
    """Bins evenly spaced in symlog space and stored as raw values (current official design).

    The bins are made symmetric around an exact zero so that uniform logits decode to exactly 0.
    """
    if num < 3 or num % 2 == 0:
        raise ValueError(f"two-hot bins must be an odd number >= 3, got {num}")
    half = symexp(torch.linspace(0.0, limit, (num + 1) // 2, dtype=torch.float64))
    return torch.cat([-half[1:].flip(0), half]).float()


def twohot_encode(target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot weights (..., K) of raw targets, interpolated linearly in raw space, clipped at the ends."""
    num = bins.shape[0]
    target = target.detach()
    below = (bins <= target[..., None]).sum(-1) - 1
    above = num - (bins > target[..., None]).sum(-1)
    below = below.clamp(0, num - 1)
    above = above.clamp(0, num - 1)
    equal = below == above
    dist_below = torch.where(equal, torch.ones_like(target), (bins[below] - target).abs())
    dist_above = torch.where(equal, torch.ones_like(target), (bins[above] - target).abs())
    total = dist_below + dist_above
    weight_below = dist_above / total
    weight_above = dist_below / total
    return F.one_hot(below, num) * weight_below[..., None] + F.one_hot(above, num) * weight_above[..., None]


def twohot_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected value under softmax(logits), summed symmetrically from the centre outwards.

    Summing the negative and positive halves pairwise keeps uniform logits at exactly 0 instead of a
    float error of order 1e-1 that the huge outer bins (about 5e8) would otherwise leave.
    """
    probs = torch.softmax(logits, -1)
    mid = (bins.shape[0] - 1) // 2
    neg = (probs[..., :mid] * bins[:mid]).flip(-1)
    pos = probs[..., mid + 1 :] * bins[mid + 1 :]
    return (neg + pos).sum(-1) + probs[..., mid] * bins[mid]


def twohot_loss(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the two-hot encoding of raw targets and softmax(logits), per element."""
    return -(twohot_encode(target, bins) * torch.log_softmax(logits, -1)).sum(-1)
