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
    loss(batch, embed, post, prior_logits, feat, dynamics) -> {name: (B, T) per-step loss}
    update_targets(keep)           after each optimiser step, where `keep` (a device bool) says it was taken (selfpred)
    embedding_error(feat, obs, encoder) -> (B, T)
                                   decoder-free objectives: how far the embedding predicted from `feat` is from
                                   the embedding of the real observation (1 - cosine)
"""

from __future__ import annotations

from typing import Any

from worldmodels.objectives.base import Objective

OBJECTIVES = ("recon", "masked", "contrastive", "selfpred")


def make_objective(spec: dict[str, Any], *, obs_shapes: dict[str, tuple[int, ...]], encoder, feat_dim: int, units: int,
                   dec_layers: int, depth: int, dec_scale: float) -> Objective:
    """Build the objective `spec["name"]` (its options from worldmodels/configs/objective/<name>.yaml).

    `encoder`: the world model's encoder (selfpred copies it into its slow target); `dec_scale`: the scale of the
    reconstruction loss (agent.loss_scales.dec); the decoder-free objectives take theirs from `spec["scale"]`."""
    name = spec.get("name", "recon")
    if name == "recon":
        from worldmodels.objectives.recon import Reconstruction

        return Reconstruction(feat_dim, obs_shapes, units, dec_layers, depth, dec_scale)
    if name == "masked":
        from worldmodels.objectives.masked import MaskedReconstruction

        return MaskedReconstruction(feat_dim, obs_shapes, units, dec_layers, depth, dec_scale,
                                    ratio=spec["ratio"], patch=spec["patch"], vector_ratio=spec["vector_ratio"])
    if name == "contrastive":
        from worldmodels.objectives.contrastive import Contrastive

        return Contrastive(feat_dim, encoder.out_dim, dim=spec["dim"], temperature=spec["temperature"], scale=spec["scale"])
    if name == "selfpred":
        from worldmodels.objectives.selfpred import SelfPrediction

        return SelfPrediction(feat_dim, encoder, units=units, steps=spec["steps"], distance=spec["distance"],
                              ema=spec["ema"], scale=spec["scale"])
    raise ValueError(f"objective={name!r} is unknown: expected one of {', '.join(OBJECTIVES)}")


def check_options(spec: dict[str, Any]) -> None:
    """Raise a one-line ValueError for an option the objective cannot take ("objective.<key>=... is invalid: ...")."""
    name = spec.get("name")
    if name not in OBJECTIVES:
        raise ValueError(f"objective={name!r} is unknown: expected one of {', '.join(OBJECTIVES)}")

    def number(key: str, low: float, high: float | None = None, integer: bool = False, strict: bool = False) -> None:
        value = spec.get(key)
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        ok = ok and (value > low if strict else value >= low) and (high is None or value <= high)
        if not ok:
            kind = "an integer" if integer else "a number"
            bound = f"> {low}" if strict else f">= {low}"
            bound += f" and <= {high}" if high is not None else ""
            raise ValueError(f"objective.{key}={value!r} is invalid: expected {kind} {bound}")

    if name == "masked":
        number("ratio", 0.0, 1.0)
        number("vector_ratio", 0.0, 1.0)
        number("patch", 1, integer=True)
    if name == "contrastive":
        number("dim", 1, integer=True)
        number("temperature", 0.0, strict=True)
    if name == "selfpred":
        number("steps", 1, integer=True)
        number("ema", 0.0, 1.0, strict=True)
        if spec.get("distance") not in ("cosine", "mse"):
            raise ValueError(f"objective.distance={spec.get('distance')!r} is invalid: expected cosine or mse")
    if name in ("contrastive", "selfpred"):
        number("scale", 0.0)
