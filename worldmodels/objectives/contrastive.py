"""Contrastive (InfoNCE, van den Oord et al. 2018; CURL, Laskin et al. 2020; DreamerPro, Deng et al. 2022).

The model state's features at step t should pick out the embedding of observation t among those of every other
step of the batch. With q_i = unit(W_q feat_i), k_j = unit(W_k embed_j) over the N = B x T steps of the batch and
a learned temperature tau:

    loss_i = -log softmax_j(q_i . k_j / tau)[i]

No decoder: the encoder and the dynamics learn only what tells the steps apart (and the reward, continue and KL
losses). tau is learned as log(1 / tau), started at `temperature` and kept >= 0.01, as in CLIP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.models.nets import Linear
from worldmodels.models.options import integer, number
from worldmodels.objectives.base import Batch, Objective, cosine_distance

MAX_INVERSE_TEMPERATURE = 100.0


def info_nce(query: torch.Tensor, key: torch.Tensor, inverse_temperature: torch.Tensor) -> torch.Tensor:
    """(N,) InfoNCE losses of N queries (N, D) against N keys (N, D), key i the positive of query i; both unit."""
    logits = inverse_temperature * query @ key.T
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device), reduction="none")


class Contrastive(Objective):
    """`contrastive`: the per-step InfoNCE loss above."""

    def __init__(self, feat_dim: int, embed_dim: int, dim: int = 64, temperature: float = 0.1, scale: float = 1.0):
        super().__init__()
        self.check_options({"dim": dim, "temperature": temperature, "scale": scale})
        self.query = Linear(feat_dim, dim)
        self.key = Linear(embed_dim, dim)
        self.log_inverse_temperature = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.scales = {"contrastive": float(scale)}

    @classmethod
    def check_options(cls, spec: Mapping[str, Any]) -> None:
        integer("objective.dim", spec.get("dim"), 1)
        number("objective.temperature", spec.get("temperature"), 0.0, strict=True)
        number("objective.scale", spec.get("scale"), 0.0)

    def inverse_temperature(self) -> torch.Tensor:
        return self.log_inverse_temperature.exp().clamp(max=MAX_INVERSE_TEMPERATURE)

    def loss(self, batch: Batch, embed: torch.Tensor, post: dict[str, torch.Tensor], prior_logits: torch.Tensor,
             feat: torch.Tensor, dynamics) -> dict[str, torch.Tensor]:
        B, T = feat.shape[:2]
        query = F.normalize(self.query(feat).reshape(B * T, -1).float(), dim=-1)
        key = F.normalize(self.key(embed).reshape(B * T, -1).float(), dim=-1)
        return {"contrastive": info_nce(query, key, self.inverse_temperature()).reshape(B, T)}

    def embedding_error(self, feat: torch.Tensor, obs: Batch, encoder: nn.Module) -> torch.Tensor:
        return cosine_distance(self.query(feat).float(), self.key(encoder(obs)).float())
