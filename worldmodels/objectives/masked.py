"""Masked modelling (MAE, He et al. 2022; Masked World Models, Seo et al. 2022): the encoder sees each observation
with random parts hidden, and the decoder reconstructs the whole of it from the model state.

Images are cut into `patch` x `patch` squares and round(ratio x count) of them, drawn anew for every step, are set
to the pixel value the encoder maps to 0 (127.5: mid-grey). Vectors lose round(vector_ratio x size) of their
dimensions the same way (set to 0, which symlog keeps at 0). Acting and evaluation see whole observations: as in MAE,
masking is a corruption of the training input only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from worldmodels.models.heads import split_keys
from worldmodels.models.options import integer, invalid, number
from worldmodels.objectives.base import Batch
from worldmodels.objectives.recon import Reconstruction

MASKED_PIXEL = 127.5  # ConvEncoder maps pixel p to p / 255 - 0.5, so a hidden patch enters the network as zeros


def random_mask(lead: tuple[int, ...], count: int, hidden: int, device: torch.device) -> torch.Tensor:
    """(*lead, count) bools with exactly `hidden` True per row, at uniformly random places."""
    order = torch.rand(*lead, count, device=device).argsort(-1)
    return order < hidden


class MaskedReconstruction(Reconstruction):
    """Reconstruction from masked inputs; the loss term is `dec`, as for recon."""

    def __init__(self, feat_dim: int, obs_shapes: dict[str, tuple[int, ...]], units: int, layers: int, depth: int,
                 scale: float = 1.0, *, ratio: float = 0.5, patch: int = 8, vector_ratio: float = 0.25):
        self.check_options({"ratio": ratio, "patch": patch, "vector_ratio": vector_ratio})
        super().__init__(feat_dim, obs_shapes, units, layers, depth, scale)
        self.vectors, self.images = split_keys(obs_shapes)
        for key, (height, width, _) in self.images.items():
            if height % patch or width % patch:
                raise invalid("objective.patch", patch, f"it must divide the {height}x{width} image {key!r}")
        self.ratio, self.patch, self.vector_ratio = float(ratio), int(patch), float(vector_ratio)

    @classmethod
    def check_options(cls, spec: Mapping[str, Any]) -> None:
        number("objective.ratio", spec.get("ratio"), 0.0, 1.0)
        number("objective.vector_ratio", spec.get("vector_ratio"), 0.0, 1.0)
        integer("objective.patch", spec.get("patch"), 1)

    def encoder_input(self, batch: Batch) -> Batch:
        out = dict(batch)
        for key in self.images:
            out[key] = self.mask_image(batch[key])
        for key in self.vectors:
            x = batch[key].float()
            hidden = round(self.vector_ratio * x.shape[-1])
            out[key] = x.masked_fill(random_mask(x.shape[:-1], x.shape[-1], hidden, x.device), 0.0)
        return out

    def mask_image(self, image: torch.Tensor) -> torch.Tensor:
        """(..., H, W, C) pixels -> float pixels with round(ratio x patches) patches set to MASKED_PIXEL."""
        *lead, height, width, _ = image.shape
        rows, cols, p = height // self.patch, width // self.patch, self.patch
        hidden = round(self.ratio * rows * cols)
        mask = random_mask(tuple(lead), rows * cols, hidden, image.device).reshape(*lead, rows, 1, cols, 1, 1)
        x = image.float().reshape(*lead, rows, p, cols, p, image.shape[-1])
        return x.masked_fill(mask, MASKED_PIXEL).reshape(image.shape)
