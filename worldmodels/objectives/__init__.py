"""The representation-objective seam: what the world model learns its representation from (`objective=`).

    recon        reconstruct every observation key from the model state (DreamerV3, the default)
    masked       the same reconstruction, from an encoder that sees randomly masked inputs (MAE, MWM)
    contrastive  InfoNCE between the model state at t and the embedding of observation t (CURL, DreamerPro); no decoder
    selfpred     predict a slow target encoder's embeddings of the next observations from the prior (BYOL, SPR); no decoder

Every objective sits beside the reward, continue and KL losses, which stay, and works with either dynamics backend.
An objective is an nn.Module (worldmodels/objectives/base.py) with:
    scales                         {loss name: scale} of the loss terms it adds
    decoder                        an ObsDecoder, or None (the imagination report then scores embeddings, not pixels)
    encoder_input(batch) -> batch  what the encoder sees during training (masked inputs; otherwise the batch)
    check_options(spec)            one-line ValueError for an option it cannot take (config validation, constructor)
    loss(batch, embed, post, prior_logits, feat, dynamics) -> {name: (B, T) per-step loss}
    update_targets(keep)           after each optimiser step, where `keep` (a device bool) says it was taken (selfpred)
    embedding_error(feat, obs, encoder) -> (B, T)
                                   decoder-free objectives: how far the embedding predicted from `feat` is from
                                   the embedding of the real observation (1 - cosine)
"""

from __future__ import annotations

from typing import Any

from worldmodels.models.options import load_class
from worldmodels.objectives.base import Objective

# The objectives by `objective.name`, imported on first use.
OBJECTIVES = {
    "recon": "worldmodels.objectives.recon:Reconstruction",
    "masked": "worldmodels.objectives.masked:MaskedReconstruction",
    "contrastive": "worldmodels.objectives.contrastive:Contrastive",
    "selfpred": "worldmodels.objectives.selfpred:SelfPrediction",
}


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise ValueError(f"objective={name!r} is unknown: expected one of {', '.join(OBJECTIVES)}")
    return load_class("objective.name", OBJECTIVES[name])


def make_objective(spec: dict[str, Any], *, obs_shapes: dict[str, tuple[int, ...]], encoder, feat_dim: int, units: int,
                   dec_layers: int, depth: int, dec_scale: float) -> Objective:
    """Build the objective `spec["name"]` (its options from worldmodels/configs/objective/<name>.yaml).

    `encoder`: the world model's encoder (selfpred copies it into its slow target); `dec_scale`: the scale of the
    reconstruction loss (agent.loss_scales.dec); the decoder-free objectives take theirs from `spec["scale"]`."""
    name = spec.get("name", "recon")
    cls = objective_class(name)
    if name == "recon":
        return cls(feat_dim, obs_shapes, units, dec_layers, depth, dec_scale)
    if name == "masked":
        return cls(feat_dim, obs_shapes, units, dec_layers, depth, dec_scale,
                   ratio=spec["ratio"], patch=spec["patch"], vector_ratio=spec["vector_ratio"])
    if name == "contrastive":
        return cls(feat_dim, encoder.out_dim, dim=spec["dim"], temperature=spec["temperature"], scale=spec["scale"])
    return cls(feat_dim, encoder, units=units, steps=spec["steps"], distance=spec["distance"], ema=spec["ema"],  # selfpred
               scale=spec["scale"])


def check_options(spec: dict[str, Any]) -> None:
    """Raise a one-line ValueError for an option the objective cannot take ("objective.<key>=... is invalid: ..."):
    the objective class's own rules (Objective.check_options), which its constructor applies too."""
    objective_class(spec.get("name")).check_options(spec)
