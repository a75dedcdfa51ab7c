"""What every latent dynamics backend is (the interface of dynamics/__init__.py) and the pieces the backends share.

A backend's state is a dict of tensors, batch first, that holds at least
    deter (B, D)      the deterministic part h, which summarises the past
    stoch (B, S, C)   the one-hot samples z of S categorical latents of C classes
and whatever else the backend carries (the Transformer's key/value cache). The heads read feat = concat(h, flat z).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worldmodels.models.distributions import one_hot, unimix_logits

State = dict[str, torch.Tensor]
Spec = dict[str, Any]


class Dynamics(nn.Module):
    """Base of the dynamics backends. A backend implements `from_config`, `observe`, `imagine_step` and `starts`,
    checks its options in `check_options`, and declares what the replay keeps of its state (`latent_keys`).

    Args:
        deter: width D of h. stoch, classes: S categorical latents of C classes.
        unimix: uniform mixture of the prior and posterior categoricals.
    """

    # The replay keys of the latents stored with each step, for replay context (Agent.split_context): what
    # `latent_values` returns and `state_from_latents` reads. Each starts with `latent/`, a prefix no observation
    # key may take (worldmodels/envs/spaces.py).
    latent_keys: tuple[str, ...] = ("latent/deter", "latent/stoch")

    def __init__(self, deter: int, stoch: int, classes: int, unimix: float):
        super().__init__()
        self.deter, self.stoch, self.classes, self.unimix = deter, stoch, classes, unimix
        self.feat_dim = deter + stoch * classes

    # -- from the config -------------------------------------------------------------------------
    @classmethod
    def check_options(cls, spec: Spec, model: Spec) -> None:
        """Raise a one-line ValueError (worldmodels/models/options.py) for a value this backend cannot take.

        spec: the `dynamics=` config (name and the backend's options); model: the `model=` size preset. The config
        validation calls this before anything is built, and the constructor with its own arguments."""

    @classmethod
    def from_config(cls, spec: Spec, embed_dim: int, action_dim: int, model: Spec, unimix: float) -> Dynamics:
        """Build the backend from its config, for an encoder of `embed_dim` outputs and actions of `action_dim`."""
        raise NotImplementedError

    # -- the interface ---------------------------------------------------------------------------
    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        """The state before anything was observed: zeros."""
        return {
            "deter": torch.zeros(batch, self.deter, device=device),
            "stoch": torch.zeros(batch, self.stoch, self.classes, device=device),
        }

    def observe(
        self, embed: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor, state: State
    ) -> tuple[State, torch.Tensor, State]:
        """Filter a sequence.

        Args:
            embed: (B, T, E) encoder outputs. prev_action: (B, T, A) action taken before each step.
            is_first: (B, T) episode starts: nothing before them is carried.
            state: the state before the sequence (`initial`, a `last`, or `state_from_latents`).
        Returns:
            post: deter (B, T, D), stoch (B, T, S, C) and logits (B, T, S, C) of the posterior (and what `starts`
            needs); prior_logits (B, T, S, C); last: the state after the sequence, for carrying into the next call.
        """
        raise NotImplementedError

    def obs_step(self, state: State, prev_action: torch.Tensor, embed: torch.Tensor, is_first: torch.Tensor) -> State:
        """One filtering step for acting in the environment: (B, ...) tensors, no time axis."""
        _, _, last = self.observe(embed[:, None], prev_action[:, None], is_first[:, None], state)
        return last

    def imagine_step(self, state: State, action: torch.Tensor) -> State:
        """One step of the prior under `action` (B, A): the next state, with the sampled class indices `classes` (B, S)
        of its stoch (which the CPU strategy's one-hot gathers read)."""
        raise NotImplementedError

    def starts(self, post: State, state: State) -> State:
        """Imagination start states (B * T, ...), detached: the state after each step of `observe`'s posterior `post`,
        which started from `state`."""
        raise NotImplementedError

    def feat(self, state: State) -> torch.Tensor:
        """concat(deter, flatten(stoch)), (..., feat_dim): what every head reads."""
        stoch = state["stoch"]
        return torch.cat([state["deter"], stoch.reshape(*stoch.shape[:-2], -1)], -1)

    def compile_steps(self) -> None:
        """torch.compile the backend's own step functions (run.compile=steps); nothing to compile by default."""

    # -- the replay's latents --------------------------------------------------------------------
    def latent_values(self, state: State) -> dict[str, torch.Tensor]:
        """A state's latents as replay values (..., ·) under `latent_keys`, on its device: deter in float16 (the official
        code stores it in its bf16 compute dtype) and the sampled class of each stoch variable."""
        return {"latent/deter": state["deter"].detach().to(torch.float16),
                "latent/stoch": state["stoch"].detach().argmax(-1).to(torch.int16)}

    def state_from_latents(self, values: dict[str, torch.Tensor]) -> State:
        """The state `latent_values` stored, from the replay values (B, ·) of one step: what the replay context starts
        filtering from. A backend reads a state without the rest of what it carries as one that carried nothing
        before it (the Transformer: an empty cache)."""
        return {"deter": values["latent/deter"].float(), "stoch": one_hot(values["latent/stoch"], self.classes)}

    # -- shared pieces ---------------------------------------------------------------------------
    @staticmethod
    def scale_action(action: torch.Tensor) -> torch.Tensor:
        """Actions into [-1, 1], as the official `action / max(1, |action|)` (the divisor without gradient)."""
        return action / torch.clamp(action.detach().abs(), min=1.0)

    def latent_logits(self, out: torch.Tensor) -> torch.Tensor:
        """Output layer (..., S * C) -> log-probabilities (..., S, C) with unimix, float32 also under bf16 autocast."""
        return unimix_logits(out.unflatten(-1, (self.stoch, self.classes)).float(), self.unimix)
