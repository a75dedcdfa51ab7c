"""How well the world model predicts the world: open-loop prediction and imagined against real returns.

Windows of K + H consecutive real steps are cut from recorded episodes. A predictor observes the
first K steps and predicts the next H under the recorded actions (open loop); the metrics compare
those predictions with what really happened, per horizon step. Predictors are plain objects, so a
test can plug in one that is exact by construction.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from worldmodels.envs.sim_state import set_sim_state

Arrays = dict[str, np.ndarray]
FLAGS = ("reward", "is_first", "is_last", "is_terminal", "action")


def windows(episodes: list[Arrays], context: int, horizon: int, max_starts: int, seed: int = 0) -> Arrays:
    """Up to `max_starts` windows of `context + horizon` steps inside single episodes: arrays (N, K+H, ...).

    Start points are spread evenly over every valid position (a fixed seed picks them when there are
    more than `max_starts`), so long and short episodes count by their length.
    """
    if context < 1 or horizon < 1:
        raise ValueError(f"context={context} and horizon={horizon} must both be >= 1")
    length = context + horizon
    longest = max(len(ep["reward"]) for ep in episodes)
    if length > longest:
        raise ValueError(f"context + horizon = {length} steps is longer than the longest recorded episode ({longest} steps)")
    starts = [(i, s) for i, ep in enumerate(episodes) for s in range(len(ep["reward"]) - length + 1)]
    if len(starts) > max_starts:
        pick = np.random.default_rng(seed).choice(len(starts), max_starts, replace=False)
        starts = [starts[j] for j in sorted(pick)]
    out = {key: np.stack([episodes[i][key][s : s + length] for i, s in starts]) for key in episodes[0]}
    out["is_first"] = out["is_first"].copy()
    out["is_first"][:, 0] = True  # the model starts every window from its initial state
    return out


class Predictor(Protocol):
    """What the metrics need from a model."""

    obs_keys: list[str]

    def open_loop(self, window: Arrays, context: int) -> Arrays:
        """Predictions for steps K .. K+H-1 of each window under its recorded actions: obs keys, reward, cont."""

    def imagine(self, window: Arrays, context: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """The policy acting inside the model for `horizon` steps from step K-1's state: the imagined
        return (N,) and the actions it took (N, H, ...) in the environment's format."""


class WorldModelPredictor:
    """Open-loop predictions of an Agent's world model, in observation units.

    A world model without a decoder (objective=contrastive or selfpred) predicts no observations: its open-loop
    predictions carry `embed_error` (N, H) instead, the objective's distance between the embedding predicted from
    the imagined state and that of the real observation (1 - cosine), and `obs_keys` is empty.
    """

    def __init__(self, agent, batch: int = 256):
        self.agent, self.batch = agent, batch
        self.obs_keys = sorted(agent.obs_keys) if agent.wm.decoder is not None else []

    def _tensors(self, window: Arrays) -> dict[str, torch.Tensor]:
        device = self.agent.device
        return {k: torch.as_tensor(v, device=device).float() if v.dtype != bool else torch.as_tensor(v, device=device) for k, v in window.items()}

    def _context_state(self, data: dict[str, torch.Tensor], context: int):
        wm = self.agent.wm
        n = data["reward"].shape[0]
        state, prev_action = self.agent.initial_carry(n)
        ctx = {k: v[:, :context] for k, v in data.items()}
        _, _, last = wm.observe(ctx, state, prev_action)
        return last

    @torch.no_grad()
    def open_loop(self, window: Arrays, context: int) -> Arrays:
        parts = [self._open_loop({k: v[i : i + self.batch] for k, v in window.items()}, context) for i in range(0, len(window["reward"]), self.batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _open_loop(self, window: Arrays, context: int) -> Arrays:
        wm = self.agent.wm
        data = self._tensors(window)
        state = self._context_state(data, context)
        feats = []
        for t in range(context, data["reward"].shape[1]):
            state = wm.dynamics.imagine_step(state, data["action"][:, t - 1])
            feats.append(wm.dynamics.feat(state))
        feat = torch.stack(feats, 1)
        if wm.decoder is not None:
            out = {k: v.cpu().numpy() for k, v in wm.decoder.predict(feat).items()}
        else:
            future = {k: v[:, context:] for k, v in data.items() if k in self.agent.obs_keys}
            out = {"embed_error": wm.objective.embedding_error(feat, future, wm.encoder).cpu().numpy()}
        out["reward"] = wm.reward.mean(feat).cpu().numpy()
        out["cont"] = wm.cont.prob(feat).cpu().numpy()
        return out

    @torch.no_grad()
    def imagine(self, window: Arrays, context: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        wm = self.agent.wm
        data = self._tensors(window)
        state = self._context_state(data, context)
        total = torch.zeros(data["reward"].shape[0], device=self.agent.device)
        alive = torch.ones_like(total)
        actions = []
        for _ in range(horizon):
            action = self.agent.actor(wm.dynamics.feat(state)).mode()
            actions.append(self.agent.env_action(action))
            state = wm.dynamics.imagine_step(state, action)
            feat = wm.dynamics.feat(state)
            total += alive * wm.reward.mean(feat)
            alive = alive * wm.cont.prob(feat)
        return total.cpu().numpy(), np.stack(actions, 1)


def openloop_metrics(predictor: Predictor, window: Arrays, context: int) -> dict[str, np.ndarray]:
    """Per-horizon errors (H,), averaged over windows: observation MSE per key (raw units), or the embedding-prediction
    error of a model without a decoder; reward MSE and absolute error, continue-flag accuracy."""
    pred = predictor.open_loop(window, context)
    metrics = {}
    if "embed_error" in pred:
        metrics["embed_error"] = pred["embed_error"].astype(np.float64).mean(0)
    for key in predictor.obs_keys:
        image = window[key].dtype == np.uint8
        scale = 255.0 if image else 1.0  # images are compared in [0, 1]
        truth = window[key][:, context:].astype(np.float64) / scale
        err = ((pred[key].astype(np.float64) / scale - truth) ** 2).reshape(*truth.shape[:2], -1).mean(-1)
        metrics[f"obs_mse/{key}"] = err.mean(0)
        if image:
            metrics[f"psnr/{key}"] = (10 * np.log10(1.0 / np.maximum(err, 1e-10))).mean(0)
    rew_true = window["reward"][:, context:].astype(np.float64)
    metrics["reward_mse"] = ((pred["reward"] - rew_true) ** 2).mean(0)
    metrics["reward_mae"] = np.abs(pred["reward"] - rew_true).mean(0)
    cont_true = 1.0 - window["is_terminal"][:, context:].astype(np.float64)
    metrics["cont_accuracy"] = ((pred["cont"] > 0.5) == (cont_true > 0.5)).mean(0)
    return metrics


def imagination_gap(predictor: Predictor, window: Arrays, context: int, env: Any = None, replays: int = 16) -> dict[str, float]:
    """Imagined return (the policy acting in the model from the state after K real steps) against reality.

    Where the windows carry simulator states and `env` can be set to them (MuJoCo, DMC), the imagined
    actions are replayed in `env` from the same state, up to `replays` windows: `replayed_*` compare
    the same actions. Everywhere, `real_return` is the return of the policy's own recorded rollout
    over the same H steps.
    """
    horizon = window["reward"].shape[1] - context
    imagined, actions = predictor.imagine(window, context, horizon)
    real = window["reward"][:, context:].sum(1)
    out = {
        "imagined_return": float(imagined.mean()),
        "real_return": float(real.mean()),
        "gap": float((imagined - real).mean()),
        "abs_gap": float(np.abs(imagined - real).mean()),
    }
    if env is not None and "sim_state" in window:
        count = min(replays, len(imagined))
        replayed = replay_actions(env, window["sim_state"][:count, context - 1], actions[:count])
        if replayed is not None:
            out.update(
                {
                    "replayed_windows": float(count),
                    "replayed_imagined_return": float(imagined[:count].mean()),
                    "replayed_real_return": float(replayed.mean()),
                    "replayed_gap": float((imagined[:count] - replayed).mean()),
                    "replayed_abs_gap": float(np.abs(imagined[:count] - replayed).mean()),
                }
            )
    return out


def replay_actions(env: Any, states: np.ndarray, actions: np.ndarray) -> np.ndarray | None:
    """Real returns of action sequences (N, H, ...) each started from a simulator state (N, S); None if unsupported."""
    returns = np.zeros(len(states))
    for i, (state, sequence) in enumerate(zip(states, actions)):
        env.reset()
        if not set_sim_state(env, state):
            return None
        for action in sequence:
            _, reward, terminated, truncated, _ = env.step(action)
            returns[i] += float(reward)
            if terminated or truncated:
                break
    return returns
