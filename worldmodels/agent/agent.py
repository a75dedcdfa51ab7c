"""The DreamerV3 agent: world model plus an actor-critic that learns inside imagined rollouts."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.agent.optim import LaProp
from worldmodels.agent.returns import ReturnNorm, lambda_return
from worldmodels.models.heads import Actor, TwoHotHead
from worldmodels.models.options import choice
from worldmodels.models.transforms import twohot_bins, twohot_expect, twohot_mix_nll
from worldmodels.world_model.world_model import Batch, WorldModel

Carry = tuple[dict[str, torch.Tensor], torch.Tensor]
GradHook = Callable[[list[torch.Tensor | None], torch.Tensor], tuple[list[torch.Tensor | None], torch.Tensor]]

# Compute precisions of the forward passes (run.precision); weights, optimiser state and losses are float32 in both.
PRECISIONS = ("float32", "bf16")


def host_arrays(values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Replay values computed on the device (Dynamics.latent_values), as the host arrays the replay stores."""
    return {k: v.cpu().numpy() for k, v in values.items()}


def action_spec(space: gym.Space) -> tuple[int, bool]:
    """(action vector size, is discrete) of a normalised action space."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), True
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0]), False
    raise ValueError(f"action space {space} is not supported: use Discrete or a 1-D Box")


def obs_shapes(space: gym.Space) -> dict[str, tuple[int, ...]]:
    """Observation keys the agent models: 1-D Box vectors and (H, W, C) uint8 Box images of a Dict space."""
    if not isinstance(space, gym.spaces.Dict):
        raise ValueError(f"observation space {space} is not supported: the agent needs a Dict of vectors and images")  # noqa: TRY004 - callers turn ValueErrors into one-line errors
    shapes = {}
    for key, sub in space.spaces.items():
        vector = isinstance(sub, gym.spaces.Box) and len(sub.shape) == 1
        image = isinstance(sub, gym.spaces.Box) and len(sub.shape) == 3 and sub.dtype == np.uint8
        if not (vector or image):
            raise ValueError(f"observation '{key}' {sub} is not supported: use 1-D Box vectors or (H, W, C) uint8 Box images")
        shapes[key] = tuple(sub.shape)
    return shapes


class Agent(nn.Module):
    """policy(obs, carry) -> (action, carry); train(batch) -> metrics; state via state_dict().

    Args:
        obs_space, act_space: the environment's Dict observation and normalised action spaces.
        model: size preset (deter, hidden, stoch, classes, blocks, units, *_layers).
        agent: learning settings (horizon, imag_length, lam, loss_scales, opt, ...).
        device: where the networks live; the same code runs on CPU and GPU.
        precision: compute precision of the forward passes of updates and acting, `float32` or `bf16`
            (see `autocast`); it may be changed between calls, since it does not change the weights.
        dynamics: the `dynamics=` config, the latent dynamics backend (worldmodels/dynamics/__init__.py); None: RSSM.
        objective: the `objective=` config, the representation objective (worldmodels/objectives/__init__.py);
            None: reconstruction.
    """

    def __init__(
        self, obs_space: gym.Space, act_space: gym.Space, model: dict[str, Any], agent: dict[str, Any], device: str = "cpu",
        precision: str = "float32", dynamics: dict[str, Any] | None = None, objective: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.precision = choice("run.precision", precision, PRECISIONS)
        self.obs_keys = obs_shapes(obs_space)
        self.action_dim, self.discrete = action_spec(act_space)
        self.cfg = dict(agent)
        bins = twohot_bins(int(agent["bins"]))
        widths = {k: model[k] for k in ("deter", "hidden", "stoch", "classes", "blocks", "units", "depth", "enc_layers", "dec_layers", "head_layers")}
        self.wm = WorldModel(self.obs_keys, self.action_dim, bins=bins, unimix=agent["unimix"], free_bits=agent["free_bits"],
                             dynamics=dynamics, objective=objective, dec_scale=agent["loss_scales"]["dec"], **widths)
        # The objective's own terms (recon and masked: `dec`, scaled by loss_scales.dec) replace `dec`.
        self.scales = {**{k: v for k, v in agent["loss_scales"].items() if k != "dec"}, **self.wm.objective.scales}
        feat = self.wm.dynamics.feat_dim
        self.actor = Actor(feat, self.action_dim, self.discrete, model["units"], model["actor_layers"])
        self.critic = TwoHotHead(feat, model["units"], model["critic_layers"], bins)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.retnorm = ReturnNorm(agent["retnorm_rate"], agent["retnorm_limit"])
        self.to(device)
        self.device = torch.device(device)
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.opt = LaProp(trainable, **agent["opt"])
        self.gamma = 1.0 - 1.0 / agent["horizon"]
        self.posterior: dict[str, torch.Tensor] = {}  # replay latents of the last train_step (posterior_entries)
        # Hooks the runtime sets under torchrun (worldmodels/runtime/distributed.py: data_parallel), so that every update
        # averages its gradients over the ranks and takes the return percentiles over every rank's returns, and all ranks
        # stay identical. `grad_hook(grads, finite) -> (grads, finite)`; `returns_hook(ret) -> the global batch's returns`.
        self.grad_hook: GradHook | None = None
        self.returns_hook: Callable[[torch.Tensor], torch.Tensor] | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward passes of an update and of acting run in.

        `float32`: none, everything runs as written. `bf16` (the official DreamerV3 default): torch.autocast
        in bfloat16 on this device, so matmuls and convolutions compute in bfloat16 while the weights, their
        gradients and the optimiser state stay float32. Every head's output (logits, policy parameters) and
        the latent logits are cast to float32 before the distributions and losses take them, the recurrent
        state stays float32, and the per-step losses are float32 before they are reduced. The package's own
        CPU products (oneDNN, packed weights, one-hot gathers) step aside under autocast for plain F.linear.
        """
        if self.precision == "float32":
            return contextlib.nullcontext()
        choice("run.precision", self.precision, PRECISIONS)  # it may have been changed since __init__
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # -- acting --------------------------------------------------------------------------------
    def initial_carry(self, batch: int) -> Carry:
        return self.wm.dynamics.initial(batch, self.device), torch.zeros(batch, self.action_dim, device=self.device)

    @torch.no_grad()
    def policy(self, obs: dict[str, np.ndarray], carry: Carry | None, mode: str = "sample") -> tuple[torch.Tensor, Carry]:
        """Batched acting: obs arrays (N, ...) including `is_first` (N,); returns actions (N, A)."""
        n = len(obs["is_first"])
        state, prev_action = carry if carry is not None else self.initial_carry(n)
        tensors = {k: torch.as_tensor(obs[k], device=self.device)[:, None] for k in self.obs_keys}
        is_first = torch.as_tensor(obs["is_first"], device=self.device).float()
        with self.autocast():  # the actions and the state come out float32 in either precision
            embed = self.wm.encoder(tensors)[:, 0]
            state = self.wm.dynamics.obs_step(state, prev_action, embed, is_first)
            dist = self.actor(self.wm.dynamics.feat(state))
            action = dist.sample() if mode == "sample" else dist.mode()
        return action, (state, action)

    @property
    def latent_keys(self) -> tuple[str, ...]:
        """The replay keys of the latent state stored with each step: those the dynamics backend declares."""
        return self.wm.dynamics.latent_keys

    def replay_entry(self, carry: Carry) -> dict[str, np.ndarray]:
        """The latent state of an acting carry as replay values (N, ...)."""
        return host_arrays(self.wm.dynamics.latent_values(carry[0]))

    def split_context(self, batch: Batch, context: int) -> tuple[Batch, Carry]:
        """Replay context (the official `replay_context`): the first `context` steps of a replayed window
        are not trained on; the latent state stored for the last of them, with the action taken there,
        starts the filtering of the rest, instead of zeros. Returns (the rest, without the latents, and its start carry)."""
        k, keys = context - 1, self.latent_keys
        state = self.wm.dynamics.state_from_latents({key: batch[key][:, k] for key in keys})
        rest = {key: value[:, context:] for key, value in batch.items() if key not in keys}
        return rest, (state, batch["action"][:, k].float())

    def posterior_entries(self) -> dict[str, np.ndarray]:
        """The posterior latents (B, T, ...) of the last `train_step`, as replay values (Dynamics.latent_values)."""
        return host_arrays(self.posterior)

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """Agent action (N, A) -> what the environments take: indices, or vectors clipped to [-1, 1]."""
        if self.discrete:
            return action.argmax(-1).cpu().numpy()
        return action.clamp(-1, 1).cpu().numpy()

    # -- learning ------------------------------------------------------------------------------
    def critic_loss(self, logp: torch.Tensor, ret: torch.Tensor, slow_val: torch.Tensor) -> torch.Tensor:
        """Two-hot loss toward the returns plus the regulariser toward the slow critic's predictions."""
        return twohot_mix_nll(logp, [ret, slow_val], [1.0, self.cfg["slowreg"]], self.critic.bins)

    def imagine(self, start: dict[str, torch.Tensor], horizon: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Roll the prior forward under the actor from N start states, time-major.

        Returns feats (H+1, N, F), and the actions taken from the first H states (H, N, A) with the
        actor's raw outputs there (H, N, P); the last state is only bootstrapped from, never acted in.
        The dynamics run without autograd: the actor learns by REINFORCE and the critic from fixed
        targets, so no gradient needs to flow through them. The actor's outputs keep their graph (to the
        actor's weights only), so the policy loss reuses this forward pass instead of running it again.
        Time-major feats make every `feats[1:]` a contiguous view rather than a copy of (N, H, F).
        """
        state = {**start, "classes": start["stoch"].argmax(-1)}  # a backend may carry more (a key/value cache)
        feats, actions, params = [], [], []
        for _ in range(horizon):
            feat, param, action, state = self._imagine_step(state)
            feats.append(feat)
            params.append(param)
            actions.append(action)
        with torch.no_grad():
            feats.append(self.imagined_features(state))
        return torch.stack(feats), torch.stack(actions), torch.stack(params)

    def imagined_features(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """The features of an imagined state (with the sampled `classes` of its stoch), which the heads read."""
        return self.wm.dynamics.feat(state)

    def _imagine_step(self, state: dict[str, torch.Tensor]) -> tuple[Any, ...]:
        """Act, then step the prior under that action: the body of the imagination loop, one unit for
        torch.compile (whose graph then holds the actor's forward and, separately, its backward).

        Returns the features of the state acted in, the actor's raw outputs there (with their graph),
        the sampled action, and the next state (with the classes sampled for its stoch).
        """
        with torch.no_grad():
            feat = self.imagined_features(state)
        param = self.actor.params(feat)
        with torch.no_grad():
            action = self.actor.dist(param.detach()).sample()
            state = self.wm.dynamics.imagine_step(state, action)
        return feat, param, action, state

    def loss(self, batch: Batch, start: Carry | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        """Total scaled loss, metrics and what the update stores of one update (world model, actor, critic, replay
        value). Nothing is changed here: the return normaliser's new estimates come out in `out["retnorm"]` (lo, hi)
        and the posterior latents as replay values in `out["posterior"]` (see `update`).

        `start`: the carry the filtering starts from (replay context); zeros when None."""
        B, T = batch["reward"].shape
        state, prev_action = start if start is not None else self.initial_carry(B)
        losses, post, _ = self.wm.loss(batch, state, prev_action)
        wm_feat = post["feat"]
        bins = self.critic.bins

        # Imagination from every posterior state of the batch; everything below is time-major (H+1, N).
        start = self.wm.dynamics.starts(post, state)
        horizon = int(self.cfg["imag_length"])
        feats, actions, policy_params = self.imagine(start, horizon)
        # The critic learns on the first H states; the last is only bootstrapped from, so its value is
        # computed without a graph (which spares 1/16 of the critic's backward).
        critic_logp = torch.log_softmax(self.critic(feats[:-1]), -1)
        with torch.no_grad():
            # Rewards and continuation of the start states are not used: they come from the replay.
            rew = F.pad(self.wm.reward.mean(feats[1:]), (0, 0, 1, 0))
            con = torch.cat([1.0 - batch["is_terminal"].reshape(1, -1).float(), self.wm.cont.prob(feats[1:])], 0)
            disc = self.gamma * con
            weight = torch.cumprod(disc, 0) / self.gamma  # weight[t]: probability of still being alive at t
            last_probs = torch.softmax(self.critic(feats[-1:]), -1)
            val = torch.cat([twohot_expect(critic_logp.detach().exp(), bins), twohot_expect(last_probs, bins)])
            ret = lambda_return(rew.T, val.T, disc.T, torch.full_like(val.T, self.cfg["lam"])).T  # (H, N)
            # The percentiles of the global batch's returns (under torchrun, every rank's).
            retnorm = self.retnorm.moved(ret if self.returns_hook is None else self.returns_hook(ret))
            retnorm_scale = self.retnorm.scale(*retnorm)
            adv = (ret - val[:-1]) / retnorm_scale
            slow_val = self.slow_critic.mean(feats[:-1])  # the last state is only bootstrapped from

        # Losses on the first H states; time-major slices like weight[:-1] are views, not copies.
        policy = self.actor.dist(policy_params)  # the first H states only
        logp = policy.log_prob(actions)
        ent = policy.entropy()
        w = weight[:-1]
        losses["policy"] = -w * (logp * adv + self.cfg["actent"] * ent)
        losses["value"] = w * self.critic_loss(critic_logp, ret, slow_val)

        # Replay value: the critic also learns on real trajectories, bootstrapped from imagined returns;
        # this loss reaches the world-model features, the imagination losses do not.
        rep_logp = torch.log_softmax(self.critic(wm_feat), -1)
        with torch.no_grad():
            boot = ret[0].reshape(B, T)
            last = batch["is_last"].float()
            term = batch["is_terminal"].float()
            rep_ret = lambda_return(batch["reward"].float(), boot, self.gamma * (1 - term), self.cfg["lam"] * (1 - last))
            rep_slow = self.slow_critic.mean(wm_feat.detach())
        rep_w = 1.0 - last[:, :-1]
        losses["repval"] = rep_w * self.critic_loss(rep_logp, F.pad(rep_ret, (0, 1)), rep_slow)[:, :-1]

        assert set(losses) == set(self.scales), (sorted(losses), sorted(self.scales))
        losses = {k: v.float() for k, v in losses.items()}  # reduced in float32 (a no-op where they already are)
        total = sum(self.scales[k] * v.mean() for k, v in losses.items())
        metrics = {f"loss/{k}": v.mean().detach() for k, v in losses.items()}
        metrics.update(
            {
                "imag/return": ret.mean(),
                "imag/value": val.mean(),
                "imag/reward": rew[1:].mean(),  # time-major: the imagined steps, not the start states
                "imag/retnorm_scale": retnorm_scale,
                "policy/entropy": ent.mean().detach(),
                "wm/post_entropy": -(post["logits"].exp() * post["logits"]).sum(-1).mean().detach(),
            }
        )
        return total, metrics, {"retnorm": retnorm, "posterior": self.wm.dynamics.latent_values(post)}

    def update(self, batch: Batch, start: Carry | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One update of every network from a replayed batch (B, T, ...), filtered from `start` (zeros when None):
        the losses, their gradients, the optimiser step (clipping included), the slow critic, the return
        normaliser and the objective's target networks.

        Returns the metrics as 0-d tensors and the posterior latents (B, T, ...) as replay values (tensors), for
        the replay context. A non-finite loss or gradient skips the update: weights, optimiser state, slow critic,
        normaliser and targets stay as they were, and `train/nonfinite` is 1, so one bad batch cannot poison the
        run. That choice is made on the device (`torch.where`), and nothing here reads the device back: the
        whole update is one function that `torch.compile` can take as one graph (worldmodels/strategies/compile.py).
        """
        with self.autocast():  # forward passes only: the gradients and the optimiser step run outside
            total, metrics, out = self.loss(batch, start)
        params = [p for group in self.opt.param_groups for p in group["params"]]
        grads = list(torch.autograd.grad(total, params, allow_unused=True))
        present = [g for g in grads if g is not None]
        finite = torch.isfinite(total) & torch.isfinite(torch.stack(torch._foreach_norm(present)).sum())
        if self.grad_hook is not None:  # under torchrun: the global batch's gradients; skipped where any rank's are not finite
            grads, finite = self.grad_hook(grads, finite)
        self.opt.apply(grads, finite)
        with torch.no_grad():
            # The critic's new weights are finite (a skipped step leaves the old ones), so a zero rate keeps the slow
            # critic exactly as it was.
            rate = self.cfg["slow_rate"] * finite.float()
            for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
                slow.lerp_(fast, rate)
        self.retnorm.store(*out["retnorm"], keep=finite)
        self.wm.objective.update_targets(finite)  # selfpred's slow target encoder
        metrics["loss/total"] = total.detach()
        metrics["train/nonfinite"] = (~finite).float()
        return metrics, out["posterior"]

    def train_step(self, batch: Batch, start: Carry | None = None) -> dict[str, float]:
        """`update`, eagerly, with the metrics read back as floats; the posterior latents are left in
        `posterior_entries()` for the replay."""
        self.train()
        metrics, self.posterior = self.update(batch, start)
        return {k: float(v) for k, v in metrics.items()}
