"""Checks environments against the contracts this package relies on, so a broken env fails early and says why.

Two levels:
- `check_env(env)`: an env already in the agent's form (what envs.make returns) keeps the agent's contract; raises
  AssertionError naming the first break.
- `diagnose(make)` and the program, for a plug-in as its author wrote it:

      python -m worldmodels.envs.check <id | module:EnvId | package.module:Class> [name=value ...] [--steps N] [--keys RE] [--exclude RE]

  builds the env (name=value pairs are constructor arguments, values read as YAML: camera=true size=64), checks the
  reset/step signatures and return values, its spaces and the dtypes and shapes of what it returns, that reset(seed=)
  makes it reproducible, that episodes end, that rgb_array frames are images, and that the agent can model it (what
  env=gym would train on); prints one line per problem with the fix and exits 0 only when there is none.
  `--suite NAME` checks a task of a third-party suite (entry-point group worldmodels.envs) instead.

  A target that builds an env that is already batched (a gymnasium.vector.VectorEnv, which envs.vector.FlatVector and
  worldmodels.runtime.driver.VectorDriver take as it is) is checked against that contract instead: num_envs >= 1; its
  single_observation_space and single_action_space (the same space checks as a single env's); every leaf of what
  reset(seed=) and step return batched, (num_envs, *its single space's shape), with its dtype (a torch tensor's mapped:
  torch.uint8 for uint8), NumPy arrays or torch tensors on one device; rewards, terminated and truncated of shape
  (num_envs,); metadata["autoreset_mode"] one of Gymnasium's three (absent: NextStep), info["final_obs"] when an env
  ends under SameStep, reset(options={"reset_mask": ...}) under Disabled; seeding; that episodes end. Actions are drawn
  from single_action_space for every env, stacked (as torch tensors on the observations' device for a torch env).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
from collections.abc import Callable
from numbers import Real
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldmodels.envs.spaces import DEFAULT_JOINT_ACTIONS, Leaf, action_problem, adapt, image_problem, leaves, plan_observation
from worldmodels.envs.vector import adapt_vector, is_torch, to_numpy
from worldmodels.envs.wrappers import first_line

DEFAULT_STEPS = 1000  # random steps of the plug-in check: enough for most tasks' own time limit to end an episode
SEED_STEPS = 10  # steps replayed to check that reset(seed=...) makes the env reproducible


def require(ok: Any, message: str) -> None:
    """Raise AssertionError(message) unless `ok`: a contract check that `python -O` does not strip, as it strips
    `assert` statements."""
    if not ok:
        raise AssertionError(message)


def check_env(env: gymnasium.Env, steps: int = 50) -> None:
    """Reset and step `env` with random actions (its own spaces' generators are left untouched).

    Contract: Dict observation space of 1-D Box vectors and (H, W, C) uint8 Box images (square, power-of-two side
    >= 8); every observation matches it in keys, dtype and shape; action space Discrete (from 0) or a float Box
    within [-1, 1]; step returns a real reward and bool flags; reset works after an episode ends. Raises
    AssertionError (or ValueError for bad arguments).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"check_env steps must be an integer >= 1, got {steps!r}")
    _check_observation_space(env.observation_space)
    _check_action_space(env.action_space)
    rng = np.random.default_rng(0)
    observation, info = _unpack_reset(env.reset(seed=0))
    _check_observation(env.observation_space, observation, "reset")
    for index in range(int(steps)):
        result = env.step(_random_action(env.action_space, rng))
        require(isinstance(result, tuple) and len(result) == 5, f"step must return a 5-tuple, got {type(result).__name__}")
        observation, reward, terminated, truncated, info = result
        where = f"step {index}"
        _check_observation(env.observation_space, observation, where)
        require(isinstance(reward, Real) and not isinstance(reward, (bool, np.bool_)), f"{where}: reward must be a real scalar, got {type(reward).__name__}")
        require(np.isfinite(reward), f"{where}: reward is not finite ({reward})")
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            require(isinstance(flag, (bool, np.bool_)), f"{where}: {name} must be a bool, got {type(flag).__name__}")
        require(isinstance(info, dict), f"{where}: info must be a dict, got {type(info).__name__}")
        if terminated or truncated:
            observation, info = _unpack_reset(env.reset())
            _check_observation(env.observation_space, observation, f"reset after {where}")
    # Reset also works mid-episode (the agent may restart envs at any time).
    observation, info = _unpack_reset(env.reset())
    _check_observation(env.observation_space, observation, "final reset")


def _check_observation_space(space: spaces.Space) -> None:
    require(isinstance(space, spaces.Dict), f"observation space must be a Dict, got {space}")
    require(len(space.spaces) > 0, "observation space Dict is empty")
    for key, value in space.spaces.items():
        require(isinstance(value, spaces.Box), f"observation space key {key!r} must be a Box, got {value}")
        image = len(value.shape) == 3 and value.dtype == np.uint8
        require(len(value.shape) == 1 or image, f"observation space key {key!r} must be a 1-D vector or an (H, W, C) uint8 image, got {value}")
        if image:
            problem = image_problem(value.shape)
            require(problem is None, f"observation space key {key!r} {value}: {problem}")


def _check_action_space(space: spaces.Space) -> None:
    if isinstance(space, spaces.Discrete):
        require(space.start == 0, f"Discrete action space must start at 0, got {space}")
        return
    require(isinstance(space, spaces.Box), f"action space must be Discrete or Box, got {space}")
    require(np.issubdtype(space.dtype, np.floating), f"Box action space must have a float dtype, got {space.dtype}")
    require(np.all(space.low >= -1.0) and np.all(space.high <= 1.0), f"Box action space must lie within [-1, 1], got {space}")


def _unpack_reset(result: Any) -> tuple[Any, dict]:
    require(isinstance(result, tuple) and len(result) == 2, f"reset must return (observation, info), got {type(result).__name__}")
    observation, info = result
    require(isinstance(info, dict), f"reset info must be a dict, got {type(info).__name__}")
    return observation, info


def _check_observation(space: spaces.Dict, observation: Any, where: str) -> None:
    require(isinstance(observation, dict), f"{where}: observation must be a dict, got {type(observation).__name__}")
    require(set(observation) == set(space.spaces), f"{where}: observation keys {sorted(observation)} differ from the space's {sorted(space.spaces)}")
    for key, box in space.spaces.items():
        value = observation[key]
        require(isinstance(value, np.ndarray), f"{where}: observation {key!r} must be a numpy array, got {type(value).__name__}")
        require(value.dtype == box.dtype, f"{where}: observation {key!r} has dtype {value.dtype}, expected {box.dtype}")
        require(value.shape == box.shape, f"{where}: observation {key!r} has shape {value.shape}, expected {box.shape}")
        require(box.contains(value), f"{where}: observation {key!r} is outside its space {box}")


def _random_action(space: spaces.Space, rng: np.random.Generator) -> Any:
    if isinstance(space, spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(space.dtype)


# ---- plug-in diagnosis -----------------------------------------------------------------------------------------


class _Problems:
    """Problems in the order found, each kind (a short id) reported once: a broken step breaks every step."""

    def __init__(self) -> None:
        self.lines: dict[str, str] = {}

    def add(self, kind: str, line: str) -> None:
        self.lines.setdefault(kind, line)

    def __len__(self) -> int:
        return len(self.lines)


class _Stop(Exception):
    """The env cannot be driven further (it raised, or returned something unusable); the problem is recorded."""


def diagnose(
    make: Callable[[], Any],
    steps: int = DEFAULT_STEPS,
    keys: str = ".*",
    exclude: str = "",
    joint_actions: int = DEFAULT_JOINT_ACTIONS,
) -> list[str]:
    """Every problem of the env `make()` builds (a single env, or one already batched), one line each with its fix
    (empty: it passes). See the module docstring."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    problems = _Problems()
    try:
        env = make()
    except (ValueError, TypeError) as error:  # envs.load's one-line errors (unknown id, missing module, bad argument)
        return [str(error)]
    except Exception as error:  # noqa: BLE001 - a constructor that raises is the first thing to report
        return [f"constructing the env raised {type(error).__name__}: {first_line(error)}"]
    try:
        _diagnose(env, problems, int(steps), keys, exclude, joint_actions)
    except _Stop:
        pass
    finally:
        try:
            env.close()
        except Exception as error:  # noqa: BLE001
            problems.add("close", f"close() raised {type(error).__name__}: {first_line(error)}")
    return list(problems.lines.values())


def _diagnose(env: Any, problems: _Problems, steps: int, keys: str, exclude: str, joint_actions: int) -> None:
    if isinstance(env, VectorEnv):
        _diagnose_batched(env, problems, steps, keys, exclude, joint_actions)
        return
    if not isinstance(env, gymnasium.Env):
        problems.add("class", f"the env is {_a(env)}, not a gymnasium.Env: subclass gymnasium.Env (or, for an env that is "
                              "already batched, gymnasium.vector.VectorEnv)")
        raise _Stop
    observation_space = env.observation_space
    _check_spaces(observation_space, env.action_space, problems, keys, exclude, joint_actions)
    all_leaves = leaves(observation_space)
    seeded = _check_reset_signature(env, problems)
    _check_seeding(env, problems, all_leaves, seeded)
    ended = _drive(env, problems, all_leaves, steps, seeded)
    if not ended:
        problems.add("ends", f"no episode ended in {steps} random steps: end episodes in step() (terminated at a terminal "
                             "state, truncated at a time limit), or give a limit (env.time_limit=N, or max_episode_steps=N "
                             "where the id is registered)")
    _check_render(env, problems)
    if not len(problems):
        _check_agent_form(env, problems, keys, exclude, joint_actions, steps)


def _check_spaces(observation_space: Any, action_space: Any, problems: _Problems, keys: str, exclude: str,
                  joint_actions: int) -> None:
    """Whether the agent can model the spaces (envs.spaces), one problem each; stops where the env cannot be driven."""
    try:
        _, space_problems = plan_observation(observation_space, keys, exclude)
    except (ValueError, TypeError) as error:  # a bad --keys or --exclude regex
        problems.add("regex", str(error))
        raise _Stop from None
    for index, line in enumerate(space_problems):
        problems.add(f"space {index}", line)
    problem = action_problem(action_space, joint_actions)
    if problem:
        problems.add("action space", problem)
    if not isinstance(observation_space, spaces.Space) or problem:
        raise _Stop


def _check_reset_signature(env: gymnasium.Env, problems: _Problems) -> bool:
    """Whether reset takes seed= (problems for seed= and options= it does not take)."""
    try:
        parameters = inspect.signature(env.unwrapped.reset).parameters
    except (TypeError, ValueError):
        return True
    anything = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [name for name in ("seed", "options") if name not in parameters and not anything]
    if missing:
        problems.add("reset signature", f"reset() takes no {' or '.join(m + '=' for m in missing)} keyword: define "
                                        "reset(self, *, seed=None, options=None) and call super().reset(seed=seed) first")
    return "seed" not in missing


def _reset(env: gymnasium.Env, problems: _Problems, leaves_: list[Leaf], where: str, seed: int | None = None) -> Any:
    observation, _ = _reset_result(env, problems, where, seed)
    _check_raw_observation(env.observation_space, leaves_, observation, f"at {where}", problems)
    return observation


def _reset_result(env: Any, problems: _Problems, where: str, seed: int | None = None,
                  options: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(observation, info) of reset(seed=, options=) (each given only when not None), unchecked but for their form."""
    kwargs = {name: value for name, value in (("seed", seed), ("options", options)) if value is not None}
    try:
        result = env.reset(**kwargs)
    except Exception as error:  # noqa: BLE001
        problems.add("reset raised", f"reset() raised {type(error).__name__} at {where}: {first_line(error)}")
        raise _Stop from None
    if not (isinstance(result, tuple) and len(result) == 2):
        problems.add("reset result", f"reset() returned {_a(result)}, not (observation, info): return "
                                     "`observation, {}` (Gymnasium's API since gym 0.26)")
        raise _Stop
    observation, info = result
    if not isinstance(info, dict):
        problems.add("reset info", f"reset() returned info as {_a(info)}: return a dict (e.g. {{}})")
    return observation, info


def _step(env: gymnasium.Env, problems: _Problems, leaves_: list[Leaf], action: Any, where: str) -> tuple[Any, float, bool]:
    """(observation, reward, episode ended) of one step, recording every problem of what it returned."""
    observation, reward, terminated, truncated, _ = _step_result(env, problems, action, where)
    _check_raw_observation(env.observation_space, leaves_, observation, f"at {where}", problems)
    if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, Real):
        shape = f" of shape {np.shape(reward)}" if isinstance(reward, np.ndarray) else ""
        problems.add("reward type", f"reward at {where} is {_a(reward)}{shape}: return a float (e.g. float(reward))")
        reward = 0.0
    elif not np.isfinite(reward):
        problems.add("reward finite", f"reward at {where} is {reward}: rewards must be finite")
        reward = 0.0
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not isinstance(flag, (bool, np.bool_)):
            problems.add(f"{name} type", f"{name} at {where} is {_a(flag)}: return a bool (e.g. bool({name}))")
    return observation, float(reward), bool(terminated) or bool(truncated)


def _step_result(env: Any, problems: _Problems, action: Any, where: str) -> tuple[Any, Any, Any, Any, Any]:
    """The 5-tuple of step(action), unchecked but for its form and its info being a dict."""
    try:
        result = env.step(action)
    except Exception as error:  # noqa: BLE001
        problems.add("step raised", f"step() raised {type(error).__name__} at {where} (action {action!r}): {first_line(error)}")
        raise _Stop from None
    if not (isinstance(result, tuple) and len(result) == 5):
        count = f"{len(result)} values" if isinstance(result, tuple) else f"{_a(result)}"
        problems.add("step result", f"step() returned {count}, not (observation, reward, terminated, truncated, info): split "
                                    "`done` into terminated (a terminal state) and truncated (a time limit)")
        raise _Stop
    if not isinstance(result[4], dict):
        problems.add("step info", f"info at {where} is {_a(result[4])}: return a dict (e.g. {{}})")
    return result


def _check_seeding(env: gymnasium.Env, problems: _Problems, leaves_: list[Leaf], seeded: bool) -> None:
    """reset(seed=0) twice, then the same actions, must give the same observations and rewards."""
    if not seeded:
        return
    action_space = env.action_space
    action_space.seed(0)
    actions = [action_space.sample() for _ in range(SEED_STEPS)]
    traces = []
    for _ in range(2):
        trace = [(_snapshot(_reset(env, problems, leaves_, "the seeding check", seed=0), leaves_), None)]
        for index, action in enumerate(actions):
            observation, reward, ended = _step(env, problems, leaves_, action, f"step {index} of the seeding check")
            trace.append((_snapshot(observation, leaves_), reward))
            if ended:
                break
        traces.append(trace)
    _compare_traces(problems, *traces, "draw all randomness from self.np_random and call super().reset(seed=seed) in reset()")


def _snapshot(observation: Any, leaves_: list[Leaf]) -> dict[str, Any]:
    """A copy of each leaf as NumPy (simulators reuse their buffers), None where it is missing."""
    copies = {}
    for leaf in leaves_:
        try:
            copies[leaf.name] = np.array(to_numpy(_get(observation, leaf)))
        except Exception:  # noqa: BLE001 - a missing or odd leaf is reported by the observation checks
            copies[leaf.name] = None
    return copies


def _compare_traces(problems: _Problems, first: list, second: list, fix: str) -> None:
    """Two traces of (observation snapshot, reward or None) from reset(seed=0) and the same actions must agree."""
    for index, ((observation_a, reward_a), (observation_b, reward_b)) in enumerate(zip(first, second)):
        differs = [name for name in observation_a if not _same(observation_a[name], observation_b.get(name))]
        if differs or not _same(reward_a, reward_b):
            what = f"observation {differs[0]!r}" if differs else "reward"
            _seeding_problem(problems, f"{what} {'right after reset' if index == 0 else f'at step {index - 1}'}", fix)
            return
    if len(first) != len(second):
        _seeding_problem(problems, "episode length", fix)


def _seeding_problem(problems: _Problems, what: str, fix: str) -> None:
    problems.add("seeding", f"reset(seed=0) twice, then the same actions, gave a different {what}: {fix}")


def _drive(env: gymnasium.Env, problems: _Problems, leaves_: list[Leaf], steps: int, seeded: bool) -> int:
    """Random steps from reset(seed=0), resetting at episode ends; returns the number of episodes that ended."""
    action_space = env.action_space
    action_space.seed(1)
    _reset(env, problems, leaves_, "the first reset", seed=0 if seeded else None)
    ended = 0
    for index in range(steps):
        _, _, done = _step(env, problems, leaves_, action_space.sample(), f"step {index}")
        if done:
            ended += 1
            _reset(env, problems, leaves_, f"the reset after step {index}")
    return ended


def _a(value: Any) -> str:
    """'a list', 'an int': the article and the name of a value's type."""
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _get(observation: Any, leaf: Leaf) -> Any:
    value = observation
    for part in leaf.path:
        value = value[part]
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = to_numpy(a), to_numpy(b)
    try:
        return bool(np.array_equal(a, b, equal_nan=True))
    except TypeError:
        return bool(np.array_equal(a, b))


def _check_raw_observation(space: spaces.Space, leaves_: list[Leaf], observation: Any, where: str, problems: _Problems,
                           check_leaf: Callable[[Leaf, Any, str, _Problems], None] | None = None,
                           space_name: str = "observation_space") -> None:
    """Each leaf of the observation against its space (with `check_leaf`, by default _check_leaf), named as the agent
    will name it."""
    if isinstance(space, spaces.Dict):
        if not isinstance(observation, dict):
            problems.add("obs dict", f"the observation {where} is {_a(observation)}, but {space_name} is a "
                                     "Dict: return a dict with its keys")
            return
        extra = sorted(map(str, set(observation) - set(space.spaces)))
        if extra:
            problems.add("obs extra", f"the observation {where} has keys {extra} that {space_name} does not declare: "
                                      "declare them or leave them out")
    for leaf in leaves_:
        try:
            value = _get(observation, leaf)
        except (KeyError, IndexError, TypeError):
            problems.add(f"obs missing {leaf.name}", f"the observation {where} has no {leaf.name!r}, which {space_name} "
                                                     "declares: return every key the space has")
            continue
        (check_leaf or _check_leaf)(leaf, value, where, problems)


def _check_leaf(leaf: Leaf, value: Any, where: str, problems: _Problems) -> None:
    space, name = leaf.space, leaf.name
    if leaf.kind == "unsupported":
        return
    if isinstance(space, spaces.Box):
        if not isinstance(value, (np.ndarray, np.generic)):
            problems.add(f"obs type {name}", f"observation {name!r} {where} is {_a(value)}: return a numpy array "
                                             f"(np.asarray(value, dtype=np.{space.dtype}))")
            return
        if value.dtype != space.dtype:
            problems.add(f"obs dtype {name}", f"observation {name!r} {where} has dtype {value.dtype}, its space says "
                                              f"{space.dtype}: return np.asarray(value, dtype=np.{space.dtype}) or declare "
                                              f"the space with dtype=np.{value.dtype}")
            return
        if value.shape != space.shape:
            problems.add(f"obs shape {name}", f"observation {name!r} {where} has shape {value.shape}, its space says "
                                              f"{space.shape}: make them agree")
            return
    try:
        inside = space.contains(np.int64(np.asarray(value).item()) if isinstance(space, spaces.Discrete) else value)
    except (TypeError, ValueError):
        inside = False
    if not inside:
        problems.add(f"obs bounds {name}", f"observation {name!r} {where} is outside its space {space}: widen the space's "
                                           "bounds (e.g. -np.inf, np.inf for an unbounded value) or keep the value inside")


def _check_render(env: gymnasium.Env, problems: _Problems) -> None:
    """An env built with render_mode='rgb_array' must render (H, W, 3) uint8 frames; obs=pixels wants them square."""
    if getattr(env, "render_mode", None) != "rgb_array":
        return
    try:
        frame = env.render()
    except Exception as error:  # noqa: BLE001
        problems.add("render raised", f"render() raised {type(error).__name__}: {first_line(error)} (for MuJoCo on a "
                                      "headless machine: MUJOCO_GL=egl)")
        return
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        what = f"a {frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else f"{_a(frame)}"
        problems.add("render frame", f"render() with render_mode='rgb_array' returned {what}: return an (H, W, 3) uint8 array")
        return
    problem = image_problem(frame.shape)
    if problem:
        problems.add("render size", f"render() returned {frame.shape[0]}x{frame.shape[1]} frames: obs=pixels asks for "
                                    "width=height=env.size (default 64) and needs square frames with a power-of-two side; "
                                    "take width= and height= constructor arguments and render at that size")


def _check_agent_form(env: gymnasium.Env, problems: _Problems, keys: str, exclude: str, joint_actions: int, steps: int) -> None:
    """What env=gym trains on: the env converted by envs.spaces keeps check_env's contract."""
    try:
        check_env(adapt(env, keys, exclude, joint_actions), steps=min(steps, 50))
    except (AssertionError, ValueError) as error:
        problems.add("agent form", f"converted to the agent's form, it breaks the contract: {first_line(error)}")
    except Exception as error:  # noqa: BLE001 - the env raised on a later reset or step: report it, do not crash
        problems.add("agent form", f"converted to the agent's form, it raised {type(error).__name__}: {first_line(error)}")


# ---- envs that are already batched (gymnasium.vector.VectorEnv, envs.vector.FlatVector) ---------------------------


class _Batch:
    """A batched env under check: its number of envs, one env's observation space and leaves, its autoreset mode, and
    the kind of array its observations came in (set by the first leaf seen: 'numpy' or a torch device's name)."""

    def __init__(self, env: VectorEnv, n: int, mode: AutoresetMode):
        self.env, self.n, self.mode = env, n, mode
        self.space = env.single_observation_space
        self.leaves = leaves(self.space)
        self.actions = batch_space(env.single_action_space, n)  # its sample(): single_action_space sampled per env, stacked
        self.kind: str | None = None
        self.device: Any = None  # the torch device actions go to; None: NumPy actions
        self.first_leaf = ""
        self.bounds: dict[str, spaces.Space] = {}  # each leaf's space batched, for its bounds


def _diagnose_batched(env: VectorEnv, problems: _Problems, steps: int, keys: str, exclude: str, joint_actions: int) -> None:
    """The contract of envs.vector.FlatVector and worldmodels.runtime.driver.VectorDriver (see envs.vector)."""
    n = getattr(env, "num_envs", None)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        problems.add("num_envs", f"num_envs is {'missing' if n is None else repr(n)}: set self.num_envs in __init__ to "
                                 "the number of envs in the batch (an int >= 1)")
        raise _Stop
    for name in ("single_observation_space", "single_action_space"):
        space = getattr(env, name, None)
        if not isinstance(space, spaces.Space):
            what = "missing" if space is None else f"{_a(space)}, not a gymnasium.spaces.Space"
            problems.add(name, f"{name} is {what}: set self.{name} (one env's space) in __init__, and "
                               f"self.{name.removeprefix('single_')} = gymnasium.vector.utils.batch_space(self.{name}, num_envs)")
    if len(problems):
        raise _Stop
    _check_spaces(env.single_observation_space, env.single_action_space, problems, keys, exclude, joint_actions)
    metadata = getattr(env, "metadata", None)
    mode = metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) if isinstance(metadata, dict) else AutoresetMode.NEXT_STEP
    try:
        mode = AutoresetMode(mode)
    except (ValueError, TypeError):
        problems.add("autoreset", f"metadata['autoreset_mode'] is {mode!r}: set it to gymnasium.vector.AutoresetMode.NEXT_STEP "
                                  "(the default when absent), SAME_STEP (final observations in info['final_obs']) or DISABLED "
                                  "(ended envs reset with reset(options={'reset_mask': ...}))")
        raise _Stop from None
    batch = _Batch(env, int(n), mode)
    seeded = _check_reset_signature(env, problems)
    _check_batch_seeding(batch, problems, seeded)
    ended = _drive_batch(batch, problems, steps, seeded)
    unreadable = any(kind.startswith(("terminated", "truncated")) for kind in problems.lines)  # reported already
    if not ended and not unreadable:
        problems.add("ends", f"no episode ended in {steps} random steps of {n} envs: end each env's episodes in step() "
                             "(terminated at a terminal state, truncated at its time limit): a batched env keeps its own "
                             "time limit (env.time_limit is for single envs)")


def _batch_reset(batch: _Batch, problems: _Problems, where: str, seed: int | None = None,
                 options: dict[str, Any] | None = None) -> Any:
    observation, _ = _reset_result(batch.env, problems, where, seed, options)
    _check_batch_observation(batch, observation, f"at {where}", problems)
    return observation


def _batch_step(batch: _Batch, problems: _Problems, where: str) -> tuple[Any, np.ndarray, np.ndarray, dict]:
    """(observation, rewards, which envs' episodes ended, info) of a step with a random action per env."""
    actions = batch.actions.sample()
    if batch.device is not None:
        import torch

        actions = torch.as_tensor(actions, device=batch.device)
    observation, reward, terminated, truncated, info = _step_result(batch.env, problems, actions, where)
    _check_batch_observation(batch, observation, f"at {where}", problems)
    reward = _per_env(batch, problems, reward, "reward", where)
    if reward is None:
        reward = np.zeros(batch.n)
    elif reward.dtype == np.bool_ or not np.issubdtype(reward.dtype, np.number):
        problems.add("reward type", f"reward at {where} has dtype {reward.dtype}: return float rewards")
        reward = np.zeros(batch.n)
    elif not np.all(np.isfinite(reward)):
        problems.add("reward finite", f"reward at {where} is not finite for env {int(np.flatnonzero(~np.isfinite(reward))[0])}"
                                      " (rewards must be finite)")
    ended = np.zeros(batch.n, bool)
    for name, flags in (("terminated", terminated), ("truncated", truncated)):
        flags = _per_env(batch, problems, flags, name, where)
        if flags is None:
            continue
        if flags.dtype != np.bool_:
            problems.add(f"{name} type", f"{name} at {where} has dtype {flags.dtype}: return bool flags "
                                         f"(np.asarray({name}, bool), or {name}.bool() for a torch tensor)")
        ended |= flags.astype(bool)
    return observation, reward.astype(np.float64), ended, info if isinstance(info, dict) else {}


def _per_env(batch: _Batch, problems: _Problems, value: Any, name: str, where: str) -> np.ndarray | None:
    """`value` (reward, terminated or truncated) as NumPy, one per env; None (the problem recorded) where it is not."""
    if not (isinstance(value, np.ndarray) or is_torch(value) and hasattr(value, "shape")):
        problems.add(f"{name} type", f"{name} at {where} is {_a(value)}: return a NumPy array or torch tensor of shape "
                                     f"(num_envs,) = ({batch.n},), one {name} per env")
        return None
    if tuple(value.shape) != (batch.n,):
        problems.add(f"{name} shape", f"{name} at {where} has shape {tuple(value.shape)}, not (num_envs,) = ({batch.n},): "
                                      f"return one {name} per env, in a 1-D array or tensor")
        return None
    try:
        return to_numpy(value)
    except TypeError as error:  # a torch dtype NumPy has not (bfloat16)
        problems.add(f"{name} type", f"{name} at {where} has dtype {value.dtype}, which NumPy has not ({first_line(error)}): "
                                     "return float32 rewards and bool flags")
        return None


def _batched(shape: tuple[int, ...]) -> str:
    """'(num_envs, 8, 8, 3)': a single space's shape with the leading axis of a batch."""
    return f"({', '.join(['num_envs', *map(str, shape)])}{',' if not shape else ''})"


def _dtype(value: Any) -> Any:
    """The NumPy dtype of an array or a torch tensor (torch.uint8 -> uint8), or the torch dtype NumPy has not."""
    if not is_torch(value):
        return value.dtype
    name = str(value.dtype).removeprefix("torch.")
    try:
        return np.dtype(name)
    except TypeError:
        return value.dtype


def _check_batch_observation(batch: _Batch, observation: Any, where: str, problems: _Problems, batched: bool = True) -> None:
    """Every leaf batched (num_envs, ...), or with batched=False one env's observation (a final one in info)."""
    check = functools.partial(_check_batch_leaf, batch, batch.n if batched else None)
    _check_raw_observation(batch.space, batch.leaves, observation, where, problems, check, "single_observation_space")


def _check_batch_leaf(batch: _Batch, n: int | None, leaf: Leaf, value: Any, where: str, problems: _Problems) -> None:
    """One leaf of a batched observation: (n, *its single space's shape) (n None: one env's, its space's shape), its
    dtype, NumPy or torch on the device of the others, inside its bounds."""
    space, name = leaf.space, leaf.name
    if leaf.kind == "unsupported":
        return
    torch_tensor = is_torch(value) and hasattr(value, "shape") and hasattr(value, "device")
    if not (isinstance(value, np.ndarray) or torch_tensor):
        shape = space.shape if n is None else f"{_batched(space.shape)} = {(n, *space.shape)}"
        problems.add(f"obs type {name}", f"observation {name!r} {where} is {_a(value)}: return a NumPy array or a torch "
                                         f"tensor of shape {shape}")
        return
    kind = str(value.device) if torch_tensor else "numpy"
    if batch.kind is None:
        batch.kind, batch.first_leaf = kind, name
        batch.device = value.device if torch_tensor else None
    elif kind != batch.kind:
        def described(kind: str) -> str:
            return "a NumPy array" if kind == "numpy" else f"a torch tensor on {kind}"

        problems.add("obs kind", f"observation {name!r} {where} is {described(kind)}, but {batch.first_leaf!r} is "
                                 f"{described(batch.kind)}: return every leaf as NumPy arrays, or every one as torch tensors "
                                 "on one device")
        return
    shape, want = tuple(value.shape), space.shape if n is None else (n, *space.shape)
    if shape != want:
        if n is None:
            problems.add(f"obs shape {name}", f"observation {name!r} {where} has shape {shape}, its single space says "
                                              f"{space.shape}: make them agree")
        elif len(shape) == len(space.shape) or shape[:1] != (n,):
            problems.add(f"obs shape {name}", f"observation {name!r} {where} has shape {shape}, not {_batched(space.shape)} = "
                                              f"{want}: give every leaf a leading axis of num_envs (row i for env i)")
        else:
            problems.add(f"obs shape {name}", f"observation {name!r} {where} has shape {shape}, but its single space says "
                                              f"{space.shape}, so {want} batched: make them agree")
        return
    dtype = _dtype(value)
    if isinstance(space, spaces.Box) and dtype != space.dtype:
        fix = f"value.to(torch.{space.dtype})" if torch_tensor else f"np.asarray(value, dtype=np.{space.dtype})"
        declare = f" or declare the space with dtype=np.{dtype}" if isinstance(dtype, np.dtype) else ""
        problems.add(f"obs dtype {name}", f"observation {name!r} {where} has dtype {dtype}, its single space says "
                                          f"{space.dtype}: return {fix}{declare}")
        return
    try:
        array = to_numpy(value)
        if not isinstance(space, spaces.Box):  # Discrete, MultiDiscrete, MultiBinary: any integer array of its values
            array = array.astype(space.dtype) if np.array_equal(array, array.astype(space.dtype)) else None
        if n is None:
            bounds = space
        elif name not in batch.bounds:
            bounds = batch.bounds[name] = batch_space(space, n)
        else:
            bounds = batch.bounds[name]
        inside = array is not None and bounds.contains(array)
    except (TypeError, ValueError):
        inside = False
    if not inside:
        problems.add(f"obs bounds {name}", f"observation {name!r} {where} is outside its single space {space} (in some env): "
                                           "widen the space's bounds (e.g. -np.inf, np.inf for an unbounded value) or keep "
                                           "the value inside")


def _after_step(batch: _Batch, problems: _Problems, ended: np.ndarray, info: dict, where: str) -> None:
    """What the autoreset mode asks of a step in which episodes ended (as VectorDriver handles it)."""
    if not ended.any():
        return
    if batch.mode == AutoresetMode.DISABLED:  # ended envs wait for reset(options={"reset_mask": ...})
        _batch_reset(batch, problems, f"the reset of the envs that ended at {where} (options={{'reset_mask': ...}})",
                     options={"reset_mask": ended})
        return
    final = info.get("final_obs")
    if final is None:
        if batch.mode == AutoresetMode.SAME_STEP:
            problems.add("final_obs", f"env {int(np.flatnonzero(ended)[0])} ended at {where}, but info has no 'final_obs': "
                                      "with autoreset SameStep, return the next episode's first observation and put the final "
                                      "ones in info['final_obs'] (which envs ended in info['_final_obs']); or declare the "
                                      "mode the env uses in metadata['autoreset_mode']")
        return
    if isinstance(final, np.ndarray) and final.dtype == object:  # one observation (or None) per env
        for i in np.flatnonzero(ended):
            if i >= len(final) or final[i] is None:
                problems.add("final_obs", f"env {i} ended at {where}, but info['final_obs'][{i}] is missing: put the "
                                          "final observation of every env that ended there")
                return
            _check_batch_observation(batch, final[i], f"in info['final_obs'][{i}] at {where}", problems, batched=False)
    else:  # batched like the observations
        _check_batch_observation(batch, final, f"in info['final_obs'] at {where}", problems)


def _check_batch_seeding(batch: _Batch, problems: _Problems, seeded: bool) -> None:
    """reset(seed=0) twice, then the same actions (up to the first step in which an episode ends), must agree."""
    if not seeded:
        return
    traces = []
    for _ in range(2):
        batch.actions.seed(0)
        trace = [(_snapshot(_batch_reset(batch, problems, "the seeding check", seed=0), batch.leaves), None)]
        for index in range(SEED_STEPS):
            observation, reward, ended, _ = _batch_step(batch, problems, f"step {index} of the seeding check")
            trace.append((_snapshot(observation, batch.leaves), reward))
            if ended.any():
                break
        traces.append(trace)
    _compare_traces(problems, *traces, "draw all randomness from generators seeded in reset(seed=...) (self.np_random "
                                       "after super().reset(seed=seed), a torch.Generator seeded there)")


def _drive_batch(batch: _Batch, problems: _Problems, steps: int, seeded: bool) -> int:
    """Random steps from reset(seed=0), as the autoreset mode asks; returns the number of episodes that ended."""
    batch.actions.seed(1)
    _batch_reset(batch, problems, "the first reset", seed=0 if seeded else None)
    ended = 0
    for index in range(steps):
        _, _, done, info = _batch_step(batch, problems, f"step {index}")
        ended += int(done.sum())
        _after_step(batch, problems, done, info, f"step {index}")
    return ended


def _parse_kwargs(pairs: list[str]) -> dict[str, Any]:
    import yaml

    kwargs = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"constructor argument {pair!r} is not of the form name=value")
        kwargs[name] = yaml.safe_load(value) if value else ""
    return kwargs


def summary(env_factory: Callable[[], Any], keys: str, exclude: str, joint_actions: int) -> str:
    """What the agent will see of the env: observation keys with shapes, and the action space (of one env, for an env
    that is already batched, with the number of envs and the autoreset mode first)."""
    env = env_factory()
    if isinstance(env, VectorEnv):
        mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        env = adapt_vector(env, keys, exclude, joint_actions)
        batched = f"batched: {env.num_envs} envs, autoreset {mode.value}; "
        observation_space, action_space = env.single_observation_space, env.single_action_space
    else:
        env = adapt(env, keys, exclude, joint_actions)
        batched, observation_space, action_space = "", env.observation_space, env.action_space
    try:
        observations = ", ".join(f"{key} {box.shape} {box.dtype}" for key, box in observation_space.spaces.items())
        return f"{batched}observation keys: {observations}; action: {action_space}"
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worldmodels.envs.check",
        description="Check an environment (a Gymnasium id, module:EnvId, or package.module:Class; a gymnasium.vector.VectorEnv "
        "it builds is checked as an env that is already batched) against the contract worldmodels relies on; one line per "
        "problem, with its fix; exit status 0 only when it passes.",
    )
    parser.add_argument("target", help="Gymnasium id, module:EnvId or package.module:Class (a class or a function returning an env)")
    parser.add_argument("kwargs", nargs="*", metavar="name=value", help="constructor arguments, values read as YAML")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"random steps to take (default {DEFAULT_STEPS})")
    parser.add_argument("--keys", default=".*", help="regex of the observation keys to keep (env.keys)")
    parser.add_argument("--exclude", default="", help="regex of the observation keys to drop (env.exclude)")
    parser.add_argument("--joint-actions", type=int, default=DEFAULT_JOINT_ACTIONS, help="env.joint_actions")
    parser.add_argument("--suite", default=None, help="a third-party suite (entry-point group worldmodels.envs); target is its task")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    try:
        kwargs = _parse_kwargs(args.kwargs)
        factory = _factory(args.target, kwargs, args.suite)
    except ValueError as error:
        print(f"{args.target}: {error}")
        return 1
    problems = diagnose(factory, args.steps, args.keys, args.exclude, args.joint_actions)
    for line in problems:
        print(f"{args.target}: {line}")
    if problems:
        print(f"{args.target}: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{args.target}: ok ({summary(factory, args.keys, args.exclude, args.joint_actions)})")
    return 0


def _factory(target: str, kwargs: dict[str, Any], suite: str | None) -> Callable[[], Any]:
    from worldmodels.envs.load import build, call_factory

    if suite is None:
        return functools.partial(build, target, None, kwargs, checker=False)
    from worldmodels.envs import SUITES, plugin_suites
    from worldmodels.envs.plugins import load_plugin

    plugins = plugin_suites()
    if suite not in plugins:
        builtin = " (a built-in suite: check its env ids directly)" if suite in SUITES else ""
        raise ValueError(f"no installed package registers the suite {suite!r} under the entry-point group "
                         f"worldmodels.envs{builtin}; installed: {', '.join(sorted(plugins)) or 'none'}")
    plugin = load_plugin(plugins[suite])
    build_one = plugin if inspect.isclass(plugin) else functools.partial(plugin, target)
    return functools.partial(call_factory, build_one, f"{suite} suite ({target})", kwargs)


if __name__ == "__main__":
    sys.exit(main())
