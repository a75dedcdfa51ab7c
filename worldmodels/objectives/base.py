"""What every representation objective provides; the defaults are those of an objective that needs none of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class Objective(nn.Module):
    """The loss terms an objective adds to the world model, and the networks it owns (see objectives/__init__.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.scales: dict[str, float] = {}
        self.decoder: nn.Module | None = None  # an instance attribute: a subclass's decoder module replaces it

    @classmethod
    def check_options(cls, spec: Mapping[str, Any]) -> None:
        """Raise a one-line ValueError (worldmodels/models/options.py) for an option value the objective cannot take;
        `spec`: the `objective=` config. The config validation calls this, and the constructor with its arguments."""

    def encoder_input(self, batch: Batch) -> Batch:
        """What the encoder sees during training: the batch as it is."""
        return batch

    def loss(self, batch: Batch, embed: torch.Tensor, post: dict[str, torch.Tensor], prior_logits: torch.Tensor,
             feat: torch.Tensor, dynamics: nn.Module) -> dict[str, torch.Tensor]:
        """Per-step losses (B, T) by name, from the replayed batch, the encoder's embeddings (B, T, E), the
        posterior states and prior logits of the dynamics, and the posterior features (B, T, F)."""
        raise NotImplementedError

    def update_targets(self, keep: torch.Tensor | None = None) -> None:
        """Called after every optimiser step; slow target networks move here, where the 0-d bool `keep` holds (the
        step was taken: decided on the device, see Agent.update; None: always)."""

    def embedding_error(self, feat: torch.Tensor, obs: Batch, encoder: nn.Module) -> torch.Tensor:
        """(B, T) distance between the embedding predicted from `feat` and that of the observations `obs`."""
        raise NotImplementedError(f"{type(self).__name__} has a decoder: score its observation predictions instead")


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a, b) over the last axis: 0 for the same direction, 2 for opposite ones."""
    return 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-6)
