"""Many environments at once.

- `make_vector(make, num_envs, mode, ...)`: N copies of a single env, stepped in subprocesses (Gymnasium's
  `AsyncVectorEnv`, mode "async") or in-process (`SyncVectorEnv`, mode "sync"). Every copy is wrapped in `Resilient`,
  which catches its own exceptions, rebuilds it and reports the failure in `info`, so one copy that crashes does not
  stop the others.
- `FlatVector`: an env that is already batched (a `gymnasium.vector.VectorEnv`, e.g. a GPU simulator whose observations
  are torch tensors on its device) in the agent's form, used as it is: observation leaves are converted in their own
  array type (a torch tensor stays a torch tensor, on its device), never through NumPy, and actions go back in the
  type the observations came in.

The agent's driver (worldmodels.runtime.driver.VectorDriver) takes either. Gymnasium's autoreset modes: NEXT_STEP (Gymnasium's
default, what the copies use) fits the driver's recording exactly; SAME_STEP (the final observation in
`info["final_obs"]`, as many GPU simulators do) and DISABLED (the driver resets ended envs with `reset_mask`) work too.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from worldmodels.envs.spaces import DEFAULT_JOINT_ACTIONS, Leaf, UnsupportedSpace, action_problem, plan_observation
from worldmodels.envs.wrappers import first_line

VECTOR_MODES = ("auto", "sync", "async")
# Seed of copy i: seed + i * MEMBER_SEED_STRIDE, so copy 0 is seeded as a single env is and the copies never share the
# seeds of the evaluation env (seed + 10_000) or of rebuilt envs (+ 1000 + failures).
MEMBER_SEED_STRIDE = 100_000


class EnvFailure(RuntimeError):
    """The environment kept failing: more consecutive errors in reset/step than allowed."""


# -- N copies of one env ------------------------------------------------------------------------------------------------
class Resilient(gymnasium.Wrapper):
    """A copy that survives its own exceptions: a failed `reset` or `step` rebuilds the env with `make(failures)` and
    resets it; more than `max_failures` failures in a row (without a successful step) raise EnvFailure.

    The failure is reported in the info of what is returned instead: `env_errors` (how many failures this call met),
    `env_error` (the last one, one line) and, after a failed step, `env_restarted`: the observation returned is then
    the first of a fresh episode (reward 0, not terminated, not truncated): no transition is invented.
    """

    def __init__(self, make: Callable[[int], gymnasium.Env], max_failures: int = 10, env: gymnasium.Env | None = None):
        super().__init__(env if env is not None else make(0))
        self._make, self.max_failures = make, int(max_failures)
        self.failures = 0  # all failures of this copy
        self.consecutive = 0  # failures since its last successful step
        self._errors: list[str] = []

    def _rebuild(self, error: Exception) -> None:
        self.failures += 1
        self.consecutive += 1
        self._errors.append(f"{type(error).__name__}: {first_line(error)}")
        if self.consecutive > self.max_failures:
            raise EnvFailure(f"the environment failed {self.consecutive} times in a row; last error: {self._errors[-1]}")
        try:
            self.env.close()
        except Exception:  # noqa: BLE001, S110 - a broken env may also fail to close
            pass
        try:
            self.env = self._make(self.failures)
        except EnvFailure:
            raise
        except Exception as e:  # noqa: BLE001 - counted like any other failure
            self._rebuild(e)

    def _report(self, info: dict[str, Any], restarted: bool = False) -> dict[str, Any]:
        if self._errors:
            info = {**info, "env_errors": len(self._errors), "env_error": self._errors[-1]}
            if restarted:
                info["env_restarted"] = True
        return info

    def _reset(self, **kwargs) -> tuple[Any, dict[str, Any]]:
        while True:
            try:
                return self.env.reset(**kwargs)
            except EnvFailure:
                raise
            except Exception as e:  # noqa: BLE001 - any simulator error: rebuild and try again
                self._rebuild(e)

    def reset(self, **kwargs) -> tuple[Any, dict[str, Any]]:
        self._errors = []
        observation, info = self._reset(**kwargs)
        return observation, self._report(info)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        self._errors = []
        try:
            result = self.env.step(action)
        except EnvFailure:
            raise
        except Exception as e:  # noqa: BLE001 - the episode ends here; a fresh one starts in a rebuilt env
            self._rebuild(e)
            observation, info = self._reset()
            return observation, 0.0, False, False, self._report(info, restarted=True)
        self.consecutive = 0
        return result


def _member(make: Callable[[int], gymnasium.Env], seed: int, attempt: int) -> gymnasium.Env:
    """Copy built with `seed`, or, after `attempt` failures, with seed + 1000 + attempt (as a single env is rebuilt)."""
    return make(seed if attempt == 0 else seed + 1000 + attempt)


def _resilient(make: Callable[[int], gymnasium.Env], seed: int, max_failures: int) -> Resilient:
    return Resilient(functools.partial(_member, make, seed), max_failures)


def build_env(suite: str, task: str, options: dict[str, Any], factories: dict[str, Callable[..., Any]], seed: int) -> gymnasium.Env:
    """One copy, `envs.make(suite, task, seed=seed, **options)`, in any process: `factories` (envs.load.FACTORIES of the
    process that asked, e.g. those worldmodels.fit registered) are registered here first where they are missing."""
    from worldmodels.envs import make
    from worldmodels.envs.load import FACTORIES

    for name, factory in factories.items():
        FACTORIES.setdefault(name, factory)
    return make(suite, task, seed=seed, **options)


def default_mode(num_envs: int) -> str:
    """`auto`: subprocesses when there is more than one copy (simulators are slow, rendering slower), else in-process."""
    return "async" if num_envs > 1 else "sync"


def make_vector(
    make: Callable[[int], gymnasium.Env],
    num_envs: int,
    mode: str = "auto",
    seed: int = 0,
    max_failures: int = 10,
    first: gymnasium.Env | None = None,
) -> VectorEnv:
    """`num_envs` copies of the env `make(seed)` builds, copy i seeded with seed + i * MEMBER_SEED_STRIDE.

    mode: "sync" (in-process, one after another), "async" (one subprocess each, Gymnasium's AsyncVectorEnv) or "auto"
    (see default_mode). `first`: copy 0, already built (sync only; it is closed for async, whose workers build their
    own). Workers start from a fork server where the platform has one (else they are spawned), not forked from this
    process: a fork of a process that has rendered with EGL hangs in its first render. So `make` must pickle
    (cloudpickle: closures and lambdas do) and a script that starts them needs the `if __name__ == "__main__":` guard.
    """
    if int(num_envs) != num_envs or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if mode not in VECTOR_MODES:
        raise ValueError(f"vector={mode!r} is invalid: expected one of {', '.join(VECTOR_MODES)}")
    mode = default_mode(num_envs) if mode == "auto" else mode
    fns = [functools.partial(_resilient, make, seed + i * MEMBER_SEED_STRIDE, max_failures) for i in range(num_envs)]
    if mode == "sync":
        if first is not None:
            fns[0] = functools.partial(Resilient, functools.partial(_member, make, seed), max_failures, first)
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP)
    if first is not None:
        first.close()
    context = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None
    return AsyncVectorEnv(fns, context=context, autoreset_mode=AutoresetMode.NEXT_STEP)


# -- an env that is already batched -----------------------------------------------------------------------------------
def is_torch(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def to_numpy(value: Any) -> np.ndarray:
    """A NumPy array of an array or a torch tensor (on any device)."""
    if is_torch(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _torch():
    import torch  # only for batched envs that hand over torch tensors

    return torch


def convert_batch(leaf: Leaf, value: Any, n: int) -> Any:
    """A batched leaf (n, ...) in the agent's form, in its own array type (NumPy, or torch on its device)."""
    space = leaf.space
    if is_torch(value):
        torch = _torch()
        if leaf.kind == "image":
            return value.to(torch.uint8)
        if leaf.kind == "chw":
            return value.to(torch.uint8).movedim(1, -1).contiguous()
        if leaf.kind in ("vector", "binary"):
            return value.reshape(n, -1).to(torch.float32)
        if leaf.kind == "onehot":
            index = value.reshape(n).long() - int(space.start)
            return torch.nn.functional.one_hot(index, int(space.n)).to(torch.float32)
        nvec, start = space.nvec.reshape(-1), space.start.reshape(-1)
        values = value.reshape(n, -1).long()
        return torch.cat([torch.nn.functional.one_hot(values[:, j] - int(start[j]), int(nvec[j])) for j in range(len(nvec))], -1).to(torch.float32)
    value = np.asarray(value)
    if leaf.kind == "image":
        return np.asarray(value, np.uint8)
    if leaf.kind == "chw":
        return np.ascontiguousarray(np.moveaxis(np.asarray(value, np.uint8), 1, -1))
    if leaf.kind in ("vector", "binary"):
        return np.asarray(value, np.float32).reshape(n, -1)
    if leaf.kind == "onehot":
        return np.eye(int(space.n), dtype=np.float32)[value.reshape(n).astype(np.int64) - int(space.start)]
    nvec, start = space.nvec.reshape(-1), space.start.reshape(-1)
    values = value.reshape(n, -1).astype(np.int64)
    return np.concatenate([np.eye(int(k), dtype=np.float32)[values[:, j] - int(s)] for j, (k, s) in enumerate(zip(nvec, start))], -1)


class BatchAction:
    """The agent's batched actions (indices (n,), or vectors (n, A) in [-1, 1]; NumPy or torch) -> the env's action
    space, as envs.spaces.FlatAction does for one env; torch actions stay torch tensors."""

    def __init__(self, space: spaces.Space, joint_actions: int = DEFAULT_JOINT_ACTIONS):
        problem = action_problem(space, joint_actions)
        if problem:
            raise UnsupportedSpace(problem)
        self.inner = space
        if isinstance(space, spaces.Discrete):
            self.mode, self.space = "discrete", spaces.Discrete(int(space.n))
            return
        if isinstance(space, spaces.Box):
            self.mode = "box"
            self.low = space.low.astype(np.float64).reshape(-1)
            self.high = space.high.astype(np.float64).reshape(-1)
            self.space = spaces.Box(-1.0, 1.0, self.low.shape, np.float32)
            return
        shape = space.shape
        self.nvec = np.full(int(np.prod(shape)), 2, np.int64) if isinstance(space, spaces.MultiBinary) else space.nvec.reshape(-1).astype(np.int64)
        self.start = np.zeros_like(self.nvec) if isinstance(space, spaces.MultiBinary) else space.start.reshape(-1).astype(np.int64)
        combinations = math.prod(int(k) for k in self.nvec)
        if combinations <= joint_actions:
            self.mode, self.space = "joint", spaces.Discrete(combinations)
        else:
            self.mode, self.space = "buckets", spaces.Box(-1.0, 1.0, self.nvec.shape, np.float32)

    def __call__(self, action: Any) -> Any:
        torch = _torch() if is_torch(action) else None
        n = action.shape[0]
        inner = self.inner

        def const(values: np.ndarray) -> Any:
            return torch.as_tensor(values, device=action.device) if torch is not None else values

        if self.mode == "discrete":
            return action.reshape(n) + int(inner.start)
        if self.mode == "joint":
            index, digits = action.reshape(n), []
            for k in self.nvec[::-1]:
                digits.append(index % int(k))
                index = index // int(k)
            stack = torch.stack if torch is not None else np.stack
            values = stack(digits[::-1], 1) + const(self.start)
            return values.reshape(n, *inner.shape).to(torch.int64) if torch is not None else values.reshape(n, *inner.shape).astype(inner.dtype)
        if torch is not None:
            vector = action.reshape(n, -1).to(torch.float64).clamp(-1.0, 1.0)
        else:
            vector = np.clip(np.asarray(action, np.float64).reshape(n, -1), -1.0, 1.0)
        if self.mode == "buckets":
            nvec = const(self.nvec)
            buckets = (vector + 1.0) * 0.5 * nvec
            buckets = buckets.floor().long() if torch is not None else np.floor(buckets).astype(np.int64)
            upper = nvec - 1
            values = (torch.minimum(buckets, upper) if torch is not None else np.minimum(buckets, upper)) + const(self.start)
            return values.reshape(n, *inner.shape) if torch is not None else values.reshape(n, *inner.shape).astype(inner.dtype)
        low, high = const(self.low), const(self.high)
        scaled = low + (vector + 1.0) * 0.5 * (high - low)
        integral = np.issubdtype(inner.dtype, np.integer)
        if torch is not None:
            scaled = torch.minimum(torch.maximum(scaled.round() if integral else scaled, low), high).reshape(n, *inner.shape)
            return scaled.long() if integral else scaled.to(torch.float32)
        scaled = np.clip(np.rint(scaled) if integral else scaled, low, high)
        return scaled.reshape(n, *inner.shape).astype(inner.dtype)


class FlatVector(VectorWrapper):
    """An already batched env in the agent's form (a flat Dict of float32 vectors and uint8 images, actions Discrete or a
    Box in [-1, 1]), with the same key selection as a single env (envs.spaces); `seed` seeds its first reset that gives
    none. Converts `info["final_obs"]` too (SAME_STEP autoreset). Leaves keep their array type: see convert_batch."""

    def __init__(self, env: VectorEnv, keys: str = ".*", exclude: str = "", joint_actions: int = DEFAULT_JOINT_ACTIONS,
                 seed: int | None = None):
        super().__init__(env)
        self.leaves, problems = plan_observation(env.single_observation_space, keys, exclude)
        if problems:
            raise UnsupportedSpace(problems[0])
        self.actions = BatchAction(env.single_action_space, joint_actions)
        self.single_observation_space = spaces.Dict({leaf.name: leaf.out_space for leaf in self.leaves})
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = self.actions.space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._seed = None if seed is None else int(seed)

    def observations(self, observation: Any, n: int | None = None) -> dict[str, Any]:
        n = self.num_envs if n is None else n
        out = {}
        for leaf in self.leaves:
            value = observation
            for part in leaf.path:
                value = value[part]
            out[leaf.name] = convert_batch(leaf, value, n)
        return out

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        final = info.get("final_obs")
        if final is None:
            return info
        if isinstance(final, np.ndarray) and final.dtype == object:  # one observation (or None) per env
            converted = np.empty(len(final), dtype=object)
            for i, single in enumerate(final):
                if single is not None:
                    converted[i] = {k: v[0] for k, v in self.observations(_add_batch_axis(single), 1).items()}
        else:  # batched like the observations
            converted = self.observations(final)
        return {**info, "final_obs": converted}

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is None and self._seed is not None:
            seed = self._seed
            self.env.action_space.seed(seed)
        self._seed = None
        observation, info = self.env.reset(seed=seed, options=options)
        return self.observations(observation), self._info(info)

    def step(self, actions: Any) -> tuple[dict[str, Any], Any, Any, Any, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(self.actions(actions))
        return self.observations(observation), reward, terminated, truncated, self._info(info)


def _add_batch_axis(observation: Any) -> Any:
    if isinstance(observation, dict):
        return {k: _add_batch_axis(v) for k, v in observation.items()}
    if isinstance(observation, tuple):
        return tuple(_add_batch_axis(v) for v in observation)
    return observation[None]


def adapt_vector(env: VectorEnv, keys: str = ".*", exclude: str = "", joint_actions: int = DEFAULT_JOINT_ACTIONS,
                 action_repeat: int = 1, time_limit: int = 0, seed: int | None = None, obs: str = "state") -> VectorEnv:
    """A batched env as the agent takes it (FlatVector); closes it on refusal. Action repeat, time limits and rendered
    pixels are a batched simulator's own business: asking for them here is refused in one line."""
    try:
        if action_repeat != 1 or time_limit:
            raise ValueError(f"env.action_repeat and env.time_limit apply to single envs; {type(env.unwrapped).__name__} is "
                             "already batched (a gymnasium.vector.VectorEnv): give it its own action repeat and time limit")
        if obs not in ("state", "proprio"):
            raise ValueError(f"obs={obs!r} renders single envs; {type(env.unwrapped).__name__} is already batched: return "
                             "images from it as observations instead")
        return FlatVector(env, keys, exclude, joint_actions, seed)
    except ValueError:
        env.close()
        raise
