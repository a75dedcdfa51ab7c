"""Value transforms of DreamerV3: symlog squashing and two-hot regression over fixed bins."""

from __future__ import annotations

import torch


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


def _twohot_indices(target: torch.Tensor, bins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of the bins just below and above each raw target, and their linear weights (clipped at the ends)."""
    num = bins.shape[0]
    target = target.detach().to(bins.dtype)
    below = (torch.searchsorted(bins, target.contiguous(), right=True) - 1).clamp(0, num - 1)
    above = (below + 1).clamp(max=num - 1)
    below = torch.where(target < bins[0], torch.zeros_like(below), below)
    above = torch.where(target < bins[0], torch.zeros_like(above), above)
    low, high = bins[below], bins[above]
    span = high - low
    weight_above = torch.where(span > 0, (target - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(span))
    weight_above = weight_above.clamp(0.0, 1.0)
    return below, above, 1.0 - weight_above, weight_above


def twohot_encode(target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot weights (..., K) of raw targets, interpolated linearly in raw space, clipped at the ends."""
    below, above, w_below, w_above = _twohot_indices(target, bins)
    out = torch.zeros(*target.shape, bins.shape[0], dtype=bins.dtype, device=bins.device)
    out.scatter_add_(-1, below[..., None], w_below[..., None])
    out.scatter_add_(-1, above[..., None], w_above[..., None])
    return out


def twohot_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected value under softmax(logits)."""
    return twohot_expect(torch.softmax(logits, -1), bins)


def twohot_expect(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected value of bin probabilities, summed symmetrically from the centre outwards.

    Summing the negative and positive halves pairwise keeps uniform probabilities at exactly 0 instead
    of a float error of order 1e-1 that the huge outer bins (about 5e8) would otherwise leave.
    """
    mid = (bins.shape[0] - 1) // 2
    neg = (probs[..., :mid] * bins[:mid]).flip(-1)
    pos = probs[..., mid + 1 :] * bins[mid + 1 :]
    return (neg + pos).sum(-1) + probs[..., mid] * bins[mid]


def twohot_nll(logp: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of raw targets' two-hot encodings under log-probabilities `logp` (..., K), per element."""
    return twohot_mix_nll(logp, [target], [1.0], bins)


def twohot_mix_nll(logp: torch.Tensor, targets: list[torch.Tensor], scales: list[float], bins: torch.Tensor) -> torch.Tensor:
    """sum_i scales[i] * twohot_nll(logp, targets[i]), per element, from a single gather.

    Gathers the few log-probabilities the two-hot targets touch instead of building (..., K) two-hot
    vectors, and all targets at once, so the backward pass fills one (..., K) gradient, not one per target.
    """
    index, weight = [], []
    for target, scale in zip(targets, scales):
        below, above, w_below, w_above = _twohot_indices(target, bins)
        index += [below, above]
        weight += [scale * w_below, scale * w_above]
    picked = logp.gather(-1, torch.stack(index, -1))
    return -(torch.stack(weight, -1) * picked).sum(-1)


def twohot_loss(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the two-hot encoding of raw targets and softmax(logits), per element."""
    return twohot_nll(torch.log_softmax(logits, -1), target, bins)
