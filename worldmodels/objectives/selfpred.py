"""Self-prediction with a slow target encoder (BYOL, Grill et al. 2020; SPR, Schwarzer et al. 2021; latent
prediction as in JEPA).

The prior the dynamics make for step t (from the posterior at t-1 and action a_{t-1}, before observation t is
seen) predicts the embeddings that a slow copy of the encoder gives observations t, t+1, ..., t+K-1: k = 1..K
steps after the last observed one. Online branch: a projector (one hidden layer) and one linear predictor head per
k; target branch: the encoder's exponential moving average, updated after every optimiser step and never trained
by gradients:

    target <- target + ema * (encoder - target)
    loss_t = 1/K sum_k d(head_k(proj(prior_feat_t)), target_encoder(o_{t+k-1}))

d is the cosine distance (1 - cos, BYOL's loss up to a factor 2) or the mean squared error. Terms that would reach
past the window or across an episode start (is_first) are left out. The k = 1 term trains the dynamics' prior
through its straight-through sample; later terms are predicted without the actions in between (as in CPC), which
keeps the objective one parallel pass with either backend. No decoder.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from worldmodels.models.distributions import sample_onehot
from worldmodels.models.nets import MLP, Linear
from worldmodels.models.options import choice, integer, number
from worldmodels.objectives.base import Batch, Objective, cosine_distance


def ema_update_(target: nn.Module, online: nn.Module, rate: float, keep: torch.Tensor | None = None) -> None:
    """target <- target + rate * (online - target), parameter by parameter (buffers copied); where the 0-d bool
    `keep` is false the target stays as it is (the online weights are then those before a skipped step: finite)."""
    with torch.no_grad():
        weight = rate if keep is None else rate * keep.float()
        for slow, fast in zip(target.parameters(), online.parameters()):
            slow.lerp_(fast, weight)
        for slow, fast in zip(target.buffers(), online.buffers()):
            slow.copy_(fast if keep is None else torch.where(keep, fast, slow))


def future_valid(is_first: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T, K) bools: the target of step t and head k, observation t+k-1, is inside the window and no episode starts
    in t .. t+k-1 (the prior at an episode start was made from the initial state, knowing nothing)."""
    B, T = is_first.shape
    first = torch.cat([is_first.bool(), is_first.new_ones(B, steps, dtype=torch.bool)], 1)  # past the end: invalid
    seen = torch.stack([first[:, k : k + T] for k in range(steps)], -1)  # episode start (or end of window) at t+k
    return ~seen.cummax(-1).values


class SelfPrediction(Objective):
    """`selfpred`: the per-step prediction loss above."""

    DISTANCES = ("cosine", "mse")

    def __init__(self, feat_dim: int, encoder: nn.Module, units: int, steps: int = 1, distance: str = "cosine",
                 ema: float = 0.01, scale: float = 1.0):
        super().__init__()
        self.check_options({"steps": steps, "distance": distance, "ema": ema, "scale": scale})
        self.steps, self.distance, self.ema = int(steps), distance, float(ema)
        self.embed_dim = encoder.out_dim
        self.projector = MLP(feat_dim, units, 1)
        self.heads = Linear(self.projector.out_dim, self.steps * self.embed_dim)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self._online = [encoder]  # a plain list: the encoder belongs to the world model, not to this module
        self.scales = {"selfpred": float(scale)}

    @classmethod
    def check_options(cls, spec: Mapping[str, Any]) -> None:
        integer("objective.steps", spec.get("steps"), 1)
        number("objective.ema", spec.get("ema"), 0.0, 1.0, strict=True)
        choice("objective.distance", spec.get("distance"), cls.DISTANCES)
        number("objective.scale", spec.get("scale"), 0.0)

    def predict(self, feat: torch.Tensor) -> torch.Tensor:
        """(..., F) prior features -> (..., K, E) predicted target embeddings, one per k."""
        return self.heads(self.projector(feat)).reshape(*feat.shape[:-1], self.steps, self.embed_dim)

    def measure(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.distance == "cosine":
            return cosine_distance(pred.float(), target.float())
        return (pred.float() - target.float()).square().mean(-1)

    def loss(self, batch: Batch, embed: torch.Tensor, post: dict[str, torch.Tensor], prior_logits: torch.Tensor,
             feat: torch.Tensor, dynamics) -> dict[str, torch.Tensor]:
        prior_feat = dynamics.feat({"deter": post["deter"], "stoch": sample_onehot(prior_logits)})
        pred = self.predict(prior_feat)  # (B, T, K, E)
        with torch.no_grad():
            target = self.target_encoder(batch)  # (B, T, E), of the unmasked observations
        T, K = target.shape[1], self.steps
        padded = torch.cat([target, target[:, -1:].expand(-1, K - 1, -1)], 1)  # the padding is never counted
        targets = torch.stack([padded[:, k : k + T] for k in range(K)], 2)  # (B, T, K, E): observation t+k-1
        valid = future_valid(batch["is_first"], K).to(pred.dtype)
        return {"selfpred": (valid * self.measure(pred, targets)).sum(-1) / K}

    def update_targets(self, keep: torch.Tensor | None = None) -> None:
        ema_update_(self.target_encoder, self._online[0], self.ema, keep)

    def embedding_error(self, feat: torch.Tensor, obs: Batch, encoder: nn.Module) -> torch.Tensor:
        """1 - cos between head 1's prediction from prior features and the target embedding of the observation."""
        return cosine_distance(self.predict(feat)[..., 0, :].float(), self.target_encoder(obs).float())
