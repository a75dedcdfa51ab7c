"""The latent dynamics seam: what the world model, the agent, the imagination report and evaluation use,
whatever the backend (`dynamics=rssm`, the default, or `dynamics=transformer`).

A backend is a `Dynamics` (dynamics/base.py) with:
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
    latent_keys, latent_values(state), state_from_latents(values)
                                   what the replay stores of a state, for the replay context
    check_options(spec, model), from_config(spec, embed_dim, action_dim, model, unimix)
    compile_steps()                torch.compile its own step functions (run.compile=steps), if it has any
States are dicts of tensors, batch first. `deter` and `stoch` are the parts every backend carries; a backend may
carry more (the Transformer's key/value cache).

Backends are found by name: `dynamics.name` in BACKENDS, or any `Dynamics` subclass that the config names with
`dynamics.backend: package.module:Class`. So a third backend is one file (the class) and one YAML
(worldmodels/configs/dynamics/<name>.yaml, or a folder on `hydra.searchpath`) holding its name, its backend and its
options; tests/dynamics/test_dynamics_plugin.py adds one that way.
"""

from __future__ import annotations

from typing import Any

from worldmodels.dynamics.base import Dynamics
from worldmodels.models.options import invalid, load_class

# The built-in backends, imported on first use.
BACKENDS = {"rssm": "worldmodels.dynamics.rssm:RSSM", "transformer": "worldmodels.dynamics.transformer:TransformerSSM"}


def dynamics_class(spec: dict[str, Any]) -> type[Dynamics]:
    """The backend class the `dynamics=` config names; a one-line ValueError for a name or class that is none."""
    if spec.get("backend") is not None:
        cls = load_class("dynamics.backend", spec["backend"])
        if not issubclass(cls, Dynamics):
            raise invalid("dynamics.backend", spec["backend"], "not a subclass of worldmodels.dynamics.base.Dynamics")
        return cls
    name = spec.get("name", "rssm")
    if name not in BACKENDS:
        raise invalid("dynamics.name", name, f"expected one of {', '.join(BACKENDS)}, or a dynamics.backend: package.module:Class")
    return load_class("dynamics.name", BACKENDS[name])


def make_dynamics(spec: dict[str, Any], embed_dim: int, action_dim: int, model: dict[str, Any], unimix: float) -> Dynamics:
    """Build the backend `spec` names with the model preset's widths (the plain model: speed-ups are applied to it
    from outside, see worldmodels/strategies)."""
    return dynamics_class(spec).from_config(spec, embed_dim, action_dim, model, unimix)
