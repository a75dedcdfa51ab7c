"""Steps environments with the agent's policy and turns Gymnasium transitions into flat step dicts: `Driver` one env,
`VectorDriver` many at once (a gymnasium.vector.VectorEnv, envs.vector) with one batched policy call per step."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from worldmodels.envs.sim_state import get_sim_state
from worldmodels.envs.vector import EnvFailure, is_torch, to_numpy

__all__ = ["Driver", "EnvFailure", "VectorDriver"]

Step = dict[str, Any]


class Driver:
    """One environment, one step at a time.

    Each recorded step holds the observation, the action the policy took there, the reward received on
    arriving there, and the flags `is_first`, `is_last`, `is_terminal`. The final observation of an
    episode is recorded too (with `is_last`), so the world model sees where episodes end.

    Args:
        env: Gymnasium env with a Dict observation space and a normalised action space.
        agent: anything with `policy(obs, carry, mode)` and `env_action(action)` (see Agent).
        mode: "sample" to explore, "mode" for greedy evaluation.
        action_repeat: environment steps per agent step, for counting env steps.
        recreate: builds a fresh env after an exception in reset or step; None lets exceptions through.
        max_failures: consecutive failures tolerated before EnvFailure is raised.
        on_failure: called when a step failed mid-episode (the replay marks its newest step as the last).
    """

    def __init__(
        self,
        env: gym.Env,
        agent: Any,
        mode: str = "sample",
        action_repeat: int = 1,
        recreate: Callable[[], gym.Env] | None = None,
        max_failures: int = 10,
        on_failure: Callable[[], None] | None = None,
    ):
        self.env, self.agent, self.mode, self.repeat = env, agent, mode, action_repeat
        self.recreate, self.max_failures, self.on_failure = recreate, max_failures, on_failure
        self.carry = None
        self.pending: Step | None = None  # the next observation to act on, with its flags
        self.episode_return = 0.0
        self.episode_length = 0
        self.capture_sim_state = False  # record the simulator state with each step (see record)
        self.failures = 0  # all environment failures so far
        self.consecutive = 0  # failures since the last successful step

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001, S110 - a broken env may also fail to close
            pass

    def _fail(self, error: Exception, mid_episode: bool) -> None:
        """Count the failure, end the broken episode where it stands, and rebuild the environment."""
        self.failures += 1
        self.consecutive += 1
        warnings.warn(f"environment failed ({type(error).__name__}: {error}); recreating it", stacklevel=3)
        if mid_episode and self.on_failure is not None:
            self.on_failure()
        self.pending, self.carry = None, None
        if self.consecutive > self.max_failures:
            raise EnvFailure(f"the environment failed {self.consecutive} times in a row; last error: {type(error).__name__}: {error}")
        try:
            self.env.close()
        except Exception:  # noqa: BLE001, S110 - a broken env may also fail to close
            pass
        try:
            self.env = self.recreate()
        except Exception as e:  # noqa: BLE001 - counted like any other failure
            self._fail(e, mid_episode=False)

    def _observe(self, obs: dict[str, np.ndarray], reward: float, first: bool, last: bool, terminal: bool) -> Step:
        step = {k: np.asarray(v) for k, v in obs.items()}
        step.update(reward=np.float32(reward), is_first=first, is_last=last, is_terminal=terminal)
        if self.capture_sim_state:
            state = get_sim_state(self.env)
            if state is not None:
                step["sim_state"] = state
        return step

    def step(self, on_step: Callable[[Step], None] | None = None) -> tuple[int, dict[str, float] | None]:
        """Act once. Returns (env steps taken, episode stats when an episode ended else None)."""
        if self.pending is None:
            try:
                obs, _ = self.env.reset()
            except Exception as e:
                if self.recreate is None:
                    raise
                self._fail(e, mid_episode=False)
                return 0, None
            self.pending = self._observe(obs, 0.0, True, False, False)
            self.episode_return, self.episode_length = 0.0, 0
        step = self.pending
        batch = {k: np.asarray(v)[None] for k, v in step.items()}
        action, self.carry = self.agent.policy(batch, self.carry, self.mode)
        step["action"] = action[0].cpu().numpy().astype(np.float32)
        if on_step is not None:
            on_step(step)
        if step["is_last"]:
            self.pending = None
            return 0, {"return": self.episode_return, "length": self.episode_length}
        try:
            obs, reward, terminated, truncated, _ = self.env.step(self.agent.env_action(action)[0])
        except Exception as e:
            if self.recreate is None:
                raise
            self._fail(e, mid_episode=True)
            return 0, None
        self.consecutive = 0
        self.episode_return += float(reward)
        self.episode_length += 1
        self.pending = self._observe(obs, reward, False, bool(terminated or truncated), bool(terminated))
        return self.repeat, None

    def episodes(self, count: int, on_step: Callable[[Step], None] | None = None) -> list[dict[str, float]]:
        """Run `count` whole episodes from fresh resets (for evaluation); returns their stats."""
        self.pending, self.carry, stats = None, None, []
        while len(stats) < count:
            _, done = self.step(on_step)
            if done is not None:
                stats.append(done)
        return stats

    def record(self, count: int, sim_state: bool = False) -> tuple[list[dict[str, np.ndarray]], list[dict[str, float]]]:
        """Run `count` whole episodes and keep their steps: one dict of arrays (L, ...) per episode.

        With `sim_state`, environments that expose their simulator state (MuJoCo, DMC) add it under
        `sim_state`, so actions can later be replayed from any recorded step.
        """
        steps: list[Step] = []
        self.capture_sim_state = sim_state
        try:
            stats = self.episodes(count, steps.append)
        finally:
            self.capture_sim_state = False
        starts = [i for i, s in enumerate(steps) if s["is_first"]] + [len(steps)]
        episodes = [
            {key: np.stack([s[key] for s in steps[a:b]]) for key in steps[a]} for a, b in itertools.pairwise(starts) if b > a
        ]
        return episodes, stats


class VectorDriver:
    """Many environments at once (a gymnasium.vector.VectorEnv, see envs.vector): one batched policy call per step.

    Each step stores one step dict per env, with the conventions of Driver (the observation, the action the policy took
    there, the reward received on arriving there, `is_first`, `is_last`, `is_terminal`; an episode's final observation
    is recorded too): `on_step` gets them together, as [(env index, step), ...]. Every env's row of the latent state
    (`carry`) is reset by its own `is_first`. Observations go to the policy as the env returns them (torch tensors on
    their device stay there; actions then go back as torch tensors on that device); what `on_step` gets is NumPy.

    Autoreset (the env's metadata["autoreset_mode"]): NEXT_STEP, Gymnasium's default, records exactly as Driver does;
    SAME_STEP (or any env whose info has `final_obs`) and DISABLED (ended envs are reset here with `reset_mask`) store the
    final observation right after the step that ended the episode, with a zero action and the latent state before it
    (neither is ever used: the next step starts an episode).

    Failures: copies built by envs.vector.make_vector handle their own (envs.vector.Resilient) and report them in their
    info: the env's newest stored step then ends its episode (`on_failure(index)`) and it goes on in a fresh episode,
    while the others go on as they were. An exception from the vector env itself (a batched simulator, a worker process
    that died) ends every env's episode and rebuilds the whole env with `recreate()`; more than `max_failures` of those
    in a row raise EnvFailure, as do copies that fail more than that in a row.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        agent: Any,
        mode: str = "sample",
        action_repeat: int = 1,
        recreate: Callable[[], gym.vector.VectorEnv] | None = None,
        max_failures: int = 10,
        on_failure: Callable[[int], None] | None = None,
    ):
        self.env, self.agent, self.mode, self.repeat = env, agent, mode, action_repeat
        self.recreate, self.max_failures, self.on_failure = recreate, max_failures, on_failure
        self.num_envs = int(env.num_envs)
        self.autoreset = gym.vector.AutoresetMode(env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP))
        self.carry = None
        self.pending: Step | None = None  # the batch to act on next: observation leaves (N, ...), reward and flags (N,)
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, np.int64)
        self.device = None  # the torch device of the env's observations, where its actions go back; None: NumPy
        self.failures = 0  # all environment failures so far (of copies and of the whole env)
        self.consecutive = 0  # failures of the whole env since its last successful step

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001, S110 - a broken vector env (a dead worker) may also fail to close
            pass

    def _fail(self, error: Exception) -> None:
        """The whole env failed: end every env's episode where it stands, and rebuild it."""
        self.failures += 1
        self.consecutive += 1
        warnings.warn(f"environment failed ({type(error).__name__}: {error}); recreating all {self.num_envs}", stacklevel=3)
        if self.pending is not None and self.on_failure is not None:
            for i in np.flatnonzero(~self.pending["is_last"]):
                self.on_failure(int(i))
        self.pending, self.carry = None, None
        if self.consecutive > self.max_failures:
            raise EnvFailure(f"the environment failed {self.consecutive} times in a row; last error: {type(error).__name__}: {error}")
        self.close()
        try:
            self.env = self.recreate()
        except Exception as e:  # noqa: BLE001 - counted like any other failure
            self._fail(e)

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except EnvFailure:
            raise
        except Exception as e:
            if self.recreate is None:
                raise
            self._fail(e)
            return None

    def _copy_failures(self, info: dict[str, Any]) -> np.ndarray:
        """Count and report the failures copies handled themselves; returns which envs were rebuilt mid-episode."""
        restarted = np.zeros(self.num_envs, bool)
        if "env_errors" not in info:
            return restarted
        where = info.get("_env_errors", np.ones(self.num_envs, bool))
        for i in np.flatnonzero(where):
            self.failures += int(info["env_errors"][i])
            env = f" (env {i} of {self.num_envs})" if self.num_envs > 1 else ""
            warnings.warn(f"environment failed ({info['env_error'][i]}){env}; recreating it", stacklevel=4)
        if "env_restarted" in info:
            restarted = np.asarray(info.get("_env_restarted", info["env_restarted"]), bool).copy()
            for i in np.flatnonzero(restarted):
                if self.on_failure is not None:
                    self.on_failure(int(i))
        return restarted

    def _batch(self, obs: dict[str, Any], reward: np.ndarray, first: np.ndarray, last: np.ndarray, terminal: np.ndarray) -> Step:
        if self.device is None:
            leaf = next(iter(obs.values()))
            self.device = leaf.device if is_torch(leaf) else None
        return {**obs, "reward": reward.astype(np.float32), "is_first": first, "is_last": last, "is_terminal": terminal}

    def _env_action(self, action: Any) -> Any:
        if self.device is None:
            return self.agent.env_action(action)
        return (action.argmax(-1) if getattr(self.agent, "discrete", False) else action.clamp(-1, 1)).to(self.device)

    def _done(self, index: np.ndarray) -> list[dict[str, float]]:
        return [{"return": float(self.returns[i]), "length": int(self.lengths[i]), "env": int(i)} for i in index]

    def step(
        self, on_step: Callable[[list[tuple[int, Step]]], None] | None = None, only: np.ndarray | None = None
    ) -> tuple[int, list[dict[str, float]]]:
        """Act once in every env. Returns (env steps taken, summed over envs; stats of the episodes that ended, with
        their env index under `env`). `only` (a boolean mask over the envs) limits what `on_step` gets, and what is
        converted to NumPy for it, to those envs' steps."""
        n = self.num_envs
        rows = np.arange(n) if only is None else np.flatnonzero(only)
        if self.pending is None:
            result = self._call(self.env.reset)
            if result is None:
                return 0, []
            obs, info = result
            self._copy_failures(info)
            self.pending = self._batch(obs, np.zeros(n), np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool))
            self.returns[:], self.lengths[:] = 0.0, 0
        batch = self.pending
        action, self.carry = self.agent.policy(batch, self.carry, self.mode)
        actions = action.cpu().numpy().astype(np.float32)
        if on_step is not None and len(rows):
            arrays = {k: _rows(v, rows) for k, v in batch.items()}
            on_step([(int(i), {**{k: v[j] for k, v in arrays.items()}, "action": actions[i]}) for j, i in enumerate(rows)])
        last = batch["is_last"]
        done = self._done(np.flatnonzero(last))  # NEXT_STEP: acting on a final observation ends the episode
        result = self._call(self.env.step, self._env_action(action))
        if result is None:
            return 0, done
        self.consecutive = 0
        obs, reward, terminated, truncated, info = result
        reward = to_numpy(reward).astype(np.float64)
        terminated, truncated = to_numpy(terminated).astype(bool), to_numpy(truncated).astype(bool)
        restarted = self._copy_failures(info)
        moved = ~last & ~restarted  # envs that really stepped (NEXT_STEP resets an env that acted on its final observation)
        self.returns[moved] += reward[moved]
        self.lengths[moved] += 1
        ended, terminal = (terminated | truncated) & moved, terminated & moved
        final = info.get("final_obs")
        if self.autoreset == gym.vector.AutoresetMode.NEXT_STEP and final is None:
            first = ~moved
            self.pending = self._batch(obs, np.where(moved, reward, 0.0), first, ended, terminal)
        else:  # SAME_STEP / DISABLED: store the final observations now; the envs are in their next episode already
            if ended.any():
                if self.autoreset == gym.vector.AutoresetMode.DISABLED:
                    final = obs
                    result = self._call(self.env.reset, options={"reset_mask": ended})
                    if result is None:
                        return self.repeat * int(moved.sum()), done
                    obs = _select(ended, result[0], obs)
                    self._copy_failures(result[1])
                shown = ended if only is None else ended & only
                if on_step is not None and shown.any():
                    on_step([(int(i), _final_step(final, i, reward[i], bool(terminal[i]), actions.shape[1:])) for i in np.flatnonzero(shown)])
                done += self._done(np.flatnonzero(ended))
            first = ~moved | ended
            self.pending = self._batch(obs, np.where(first, 0.0, reward), first, np.zeros(n, bool), np.zeros(n, bool))
        self.returns[first], self.lengths[first] = 0.0, 0
        return self.repeat * int(moved.sum()), done

    def _quota(self, count: int) -> list[int]:
        """How many of `count` evaluation episodes each env runs: as even a share as can be, the lower envs first."""
        n = self.num_envs
        return [count // n + (i < count % n) for i in range(n)]

    def episodes(self, count: int, on_step: Callable[[list[tuple[int, Step]]], None] | None = None) -> list[dict[str, float]]:
        """`count` whole episodes from fresh resets (for evaluation): the first episodes of every env, env by env, so
        short episodes are not favoured; returns their stats. `on_step` gets the steps of the envs that still owe
        episodes (as `step` gives them)."""
        self.pending, self.carry = None, None
        need = self._quota(count)
        got: list[list[dict[str, float]]] = [[] for _ in range(self.num_envs)]
        while any(len(g) < k for g, k in zip(got, need)):
            owing = np.array([len(g) < k for g, k in zip(got, need)])
            _, done = self.step(on_step, owing if on_step is not None else None)
            for stats in done:
                if len(got[stats["env"]]) < need[stats["env"]]:
                    got[stats["env"]].append(stats)
        return [stats for per_env in got for stats in per_env]

    def record(self, count: int, sim_state: bool = False) -> tuple[list[dict[str, np.ndarray]], list[dict[str, float]]]:
        """Run `count` whole episodes as `episodes` picks them and keep their steps: one dict of arrays (L, ...) per
        episode (as Driver.record gives them), in the order of their stats. Each env grows one episode at a time; only
        the steps of envs that still owe episodes are converted to NumPy. `sim_state` is accepted for the same call as
        Driver.record and ignored: a batched env has no per-env simulator state to record."""
        del sim_state
        growing: list[list[Step]] = [[] for _ in range(self.num_envs)]
        ended: list[list[list[Step]]] = [[] for _ in range(self.num_envs)]

        def keep(steps: list[tuple[int, Step]]) -> None:
            for i, step in steps:
                if step["is_first"]:  # a new episode; one cut short by a failure (no is_last) is dropped
                    growing[i] = []
                growing[i].append({k: np.array(v) for k, v in step.items()})  # copies: an env may reuse its buffers
                if step["is_last"]:
                    ended[i].append(growing[i])
                    growing[i] = []

        stats = self.episodes(count, keep)
        need = self._quota(count)
        episodes = [
            {key: np.stack([s[key] for s in steps]) for key in steps[0]} for i in range(self.num_envs) for steps in ended[i][: need[i]]
        ]
        assert len(episodes) == len(stats), (len(episodes), len(stats))
        return episodes, stats


def _rows(value: Any, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` of a batched leaf (NumPy or torch, on any device) as NumPy, converting only those."""
    if len(rows) == len(value):  # every env: no copy
        return to_numpy(value)
    if is_torch(value):
        import torch

        return to_numpy(value[torch.as_tensor(rows, device=value.device)])
    return np.asarray(value)[rows]


def _select(mask: np.ndarray, where_true: dict[str, Any], where_false: dict[str, Any]) -> dict[str, Any]:
    """Per env, the observation of `where_true` where mask is set, else of `where_false` (NumPy or torch leaves)."""
    out = {}
    for key, a in where_true.items():
        b = where_false[key]
        if is_torch(a):
            import torch

            m = torch.as_tensor(mask, device=a.device).reshape(-1, *([1] * (a.dim() - 1)))
            out[key] = torch.where(m, a, b)
        else:
            out[key] = np.where(mask.reshape(-1, *([1] * (np.ndim(a) - 1))), a, b)
    return out


def _final_step(final: Any, i: int, reward: float, terminal: bool, action_shape: tuple[int, ...]) -> Step:
    """The stored step of env i's final observation (SAME_STEP/DISABLED): from a per-env array of observations, or a
    batch of them."""
    row = final[i] if isinstance(final, np.ndarray) and final.dtype == object else {k: v[i] for k, v in final.items()}
    step = {k: to_numpy(v) for k, v in row.items()}
    step.update(reward=np.float32(reward), is_first=np.bool_(False), is_last=np.bool_(True), is_terminal=np.bool_(terminal))
    step["action"] = np.zeros(action_shape, np.float32)
    return step
