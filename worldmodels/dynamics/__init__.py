"""The latent dynamics seam: what the world model, the agent, the imagination report and evaluation use,
whatever the backend (`dynamics=rssm`, the default, or `dynamics=transformer`).

A backend is an nn.Module with:
    feat_dim                       width of the features every head reads
    deter, stoch, classes          widths of the state's parts
    initial(batch, device)         the state before anything was observed
    observe(embed (B,T,E), prev_action (B,T,A), is_first (B,T), state)
                                   -> (posterior dict: deter (B,T,D), stoch (B,T,S,C), logits (B,T,S,C);
                                       prior logits (B,T,S,C); last state, to carry into the next call)
    obs_step(state, prev_action (B,A), embed (B,E), is_first (B,)) -> state   (acting)
    imagine_step(state, action (B,A)) -> state                                 (one prior step; adds classes)
    starts(post, state) -> state with batch B*T                                (imagination starts, detached)
    feat(state) -> concat(deter, flatten(stoch))
    compile_steps()                (optional) torch.compile its own step functions (run.compile)
States are dicts of tensors, batch first. `deter` and `stoch` are the parts carried between calls by every
backend (the replay context stores them); a backend may carry more (the Transformer's key/value cache).
"""

from __future__ import annotations

from typing import Any

from torch import nn

BACKENDS = ("rssm", "transformer")


def make_dynamics(spec: dict[str, Any], embed_dim: int, action_dim: int, model: dict[str, Any], unimix: float) -> nn.Module:
    """Build the backend `spec["name"]` with the model preset's widths (the plain model: speed-ups are applied to it
    from outside, see worldmodels/strategies)."""
    name = spec.get("name", "rssm")
    if name == "rssm":
        from worldmodels.dynamics.rssm import RSSM

        widths = (model["deter"], model["hidden"], model["stoch"], model["classes"], model["blocks"], unimix)
        return RSSM(embed_dim, action_dim, *widths)
    if name == "transformer":
        from worldmodels.dynamics.transformer import TransformerSSM

        return TransformerSSM(
            embed_dim, action_dim, d_model=spec["d_model"], layers=spec["layers"], heads=spec["heads"], context=spec["context"],
            stoch=model["stoch"], classes=model["classes"], hidden=model["hidden"], unimix=unimix,
        )
    raise ValueError(f"dynamics={name!r} is unknown: expected one of {', '.join(BACKENDS)}")
