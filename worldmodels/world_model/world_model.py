"""World model: encoder, latent dynamics, representation objective, reward and continue heads, and their losses."""

from __future__ import annotations

import torch
from torch import nn

from worldmodels.dynamics import make_dynamics
from worldmodels.dynamics.base import State
from worldmodels.models.distributions import kl_categorical
from worldmodels.models.heads import BinaryHead, ObsEncoder, TwoHotHead
from worldmodels.objectives import make_objective

Batch = dict[str, torch.Tensor]


class WorldModel(nn.Module):
    """Learns p(o, r, c | z) and the latent dynamics from replayed sequences.

    Args:
        obs_shapes: observation key -> shape: (n,) vectors and (H, W, C) uint8 images.
        action_dim: size of the action vector (one-hot for discrete actions).
        model: widths from the size preset (deter, hidden, stoch, classes, blocks, units, depth, *_layers).
        bins: two-hot bins of the reward head. unimix, free_bits: as in DreamerV3.
        dynamics: the `dynamics=` config (name and the backend's own options); None: the RSSM.
        objective: the `objective=` config (worldmodels/objectives); None: reconstruction. dec_scale: its loss scale.
    """

    def __init__(
        self,
        obs_shapes: dict[str, tuple[int, ...]],
        action_dim: int,
        *,
        deter: int,
        hidden: int,
        stoch: int,
        classes: int,
        blocks: int,
        units: int,
        depth: int,
        enc_layers: int,
        dec_layers: int,
        head_layers: int,
        bins: torch.Tensor,
        unimix: float = 0.01,
        free_bits: float = 1.0,
        dynamics: dict | None = None,
        objective: dict | None = None,
        dec_scale: float = 1.0,
    ):
        super().__init__()
        self.free_bits = free_bits
        self.encoder = ObsEncoder(obs_shapes, units, enc_layers, depth)
        widths = {"deter": deter, "hidden": hidden, "stoch": stoch, "classes": classes, "blocks": blocks}
        # The latent dynamics, RSSM, Transformer or another backend (worldmodels/dynamics); nothing else here knows which.
        self.dynamics = make_dynamics(dynamics or {"name": "rssm"}, self.encoder.out_dim, action_dim, widths, unimix)
        feat = self.dynamics.feat_dim
        # What the representation learns from (worldmodels/objectives): reconstruction, masked, contrastive, selfpred.
        self.objective = make_objective(objective or {"name": "recon"}, obs_shapes=obs_shapes, encoder=self.encoder,
                                        feat_dim=feat, units=units, dec_layers=dec_layers, depth=depth, dec_scale=dec_scale)
        self.reward = TwoHotHead(feat, units, head_layers, bins)
        self.cont = BinaryHead(feat, units, head_layers)

    @property
    def decoder(self) -> torch.nn.Module | None:
        """The objective's observation decoder (recon, masked), or None (contrastive, selfpred)."""
        return self.objective.decoder

    def observe(
        self, batch: Batch, state: State, prev_action: torch.Tensor, embed: torch.Tensor | None = None
    ) -> tuple[State, torch.Tensor, State]:
        """Posterior states of a batch; `prev_action` (B, A) is the action before the first step; `embed`: the
        encoder's output when the caller has it (None: the encoder runs on the batch)."""
        action = batch["action"]
        prev = torch.cat([prev_action[:, None], action[:, :-1]], 1)
        embed = self.encoder(batch) if embed is None else embed
        return self.dynamics.observe(embed, prev, batch["is_first"], state)

    def loss(self, batch: Batch, state: State, prev_action: torch.Tensor) -> tuple[dict[str, torch.Tensor], State, State]:
        """Per-step losses (B, T) by name, the posterior states, and the last state."""
        embed = self.encoder(self.objective.encoder_input(batch))
        post, prior_logits, last = self.observe(batch, state, prev_action, embed)
        feat = self.dynamics.feat(post)
        post_logits = post["logits"]
        losses = {
            **self.objective.loss(batch, embed, post, prior_logits, feat, self.dynamics),
            "rew": self.reward.loss(feat, batch["reward"]),
            "con": self.cont.loss(feat, 1.0 - batch["is_terminal"].float()),
            # KL balancing with free bits: clipping below 1 nat stops pushing where the KL is already small.
            "dyn": torch.clamp(kl_categorical(post_logits.detach(), prior_logits), min=self.free_bits),
            "rep": torch.clamp(kl_categorical(post_logits, prior_logits.detach()), min=self.free_bits),
        }
        post["feat"] = feat
        return losses, post, last
