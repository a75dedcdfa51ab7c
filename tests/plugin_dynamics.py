"""A third latent dynamics backend, written the way a user adds one: this file and a YAML that names it
(`backend: tests.plugin_dynamics:MeanDynamics`), nothing changed in the package. For tests/dynamics/test_dynamics_plugin.py.

MeanDynamics: h is the running mean of the episode's tokens, u_t = tok(z_{t-1}, a_{t-1}):

    h_t = h_{t-1} + (u_t - h_{t-1}) / n_t,   n_t = n_{t-1} + 1     both reset at an episode start
    q(z_t | h_t, e_t), p(z_t | h_t)                               one hidden layer each

The mean needs n, so the state carries `count` (B,) besides deter and stoch, and the replay stores it too
(`latent/count`): a window started from the replay context continues the mean where acting left it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.dynamics.base import Dynamics, Spec, State
from worldmodels.models.distributions import sample_onehot, sample_onehot_index
from worldmodels.models.options import integer


class MeanDynamics(Dynamics):
    """Options: `width`, the width of h (dynamics.width); stoch, classes and hidden come from the size preset."""

    latent_keys = ("latent/deter", "latent/stoch", "latent/count")

    def __init__(self, embed_dim: int, action_dim: int, width: int, hidden: int, stoch: int, classes: int, unimix: float):
        self.check_options({"width": width}, {})
        super().__init__(width, stoch, classes, unimix)
        self.tok = nn.Linear(stoch * classes + action_dim, width)
        self.post_hidden = nn.Linear(width + embed_dim, hidden)
        self.post_out = nn.Linear(hidden, stoch * classes)
        self.prior_hidden = nn.Linear(width, hidden)
        self.prior_out = nn.Linear(hidden, stoch * classes)

    @classmethod
    def check_options(cls, spec: Spec, model: Spec) -> None:
        integer("dynamics.width", spec.get("width"))

    @classmethod
    def from_config(cls, spec: Spec, embed_dim: int, action_dim: int, model: Spec, unimix: float) -> MeanDynamics:
        return cls(embed_dim, action_dim, spec["width"], model["hidden"], model["stoch"], model["classes"], unimix)

    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        return {**super().initial(batch, device), "count": torch.zeros(batch, device=device)}

    def mean_step(self, state: State, action: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_t, n_t) from the state at t-1 and a_{t-1}; everything before is forgotten where keep (B,) is 0."""
        stoch = state["stoch"].flatten(-2) * keep[:, None]
        token = self.tok(torch.cat([stoch, self.scale_action(action * keep[:, None])], -1))
        deter, count = state["deter"] * keep[:, None], state["count"] * keep + 1
        return deter + (token - deter) / count[:, None], count

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        return self.latent_logits(self.prior_out(F.silu(self.prior_hidden(deter))))

    def observe(
        self, embed: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor, state: State
    ) -> tuple[State, torch.Tensor, State]:
        keep = 1.0 - is_first.float()
        steps = []
        for t in range(embed.shape[1]):
            deter, count = self.mean_step(state, prev_action[:, t], keep[:, t])
            logits = self.latent_logits(self.post_out(F.silu(self.post_hidden(torch.cat([deter, embed[:, t]], -1)))))
            state = {"deter": deter, "stoch": sample_onehot(logits), "count": count}
            steps.append({**state, "logits": logits})
        post = {key: torch.stack([step[key] for step in steps], 1) for key in steps[0]}
        return post, self.prior_logits(post["deter"]), state

    def imagine_step(self, state: State, action: torch.Tensor) -> State:
        deter, count = self.mean_step(state, action, torch.ones_like(state["count"]))
        stoch, classes = sample_onehot_index(self.prior_logits(deter))
        return {"deter": deter, "stoch": stoch, "classes": classes, "count": count}

    def starts(self, post: State, state: State) -> State:
        return {key: post[key].detach().flatten(0, 1) for key in ("deter", "stoch", "count")}

    def latent_values(self, state: State) -> dict[str, torch.Tensor]:
        return {**super().latent_values(state), "latent/count": state["count"].detach().to(torch.int32)}

    def state_from_latents(self, values: dict[str, torch.Tensor]) -> State:
        return {**super().state_from_latents(values), "count": values["latent/count"].float()}
