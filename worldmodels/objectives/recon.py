"""Reconstruction (DreamerV3): decode every observation key from the model state's features."""

from __future__ import annotations

import torch

from worldmodels.models.heads import ObsDecoder
from worldmodels.objectives.base import Batch, Objective


class Reconstruction(Objective):
    """`dec`: the decoder's per-step loss, symlog squared error of vectors and squared pixel error of images, summed
    (worldmodels/models/heads.py)."""

    def __init__(self, feat_dim: int, obs_shapes: dict[str, tuple[int, ...]], units: int, layers: int, depth: int,
                 scale: float = 1.0):
        super().__init__()
        self.decoder = ObsDecoder(feat_dim, obs_shapes, units, layers, depth)
        self.scales = {"dec": float(scale)}

    def loss(self, batch: Batch, embed: torch.Tensor, post: dict[str, torch.Tensor], prior_logits: torch.Tensor,
             feat: torch.Tensor, dynamics) -> dict[str, torch.Tensor]:
        return {"dec": self.decoder.loss(feat, batch)}
