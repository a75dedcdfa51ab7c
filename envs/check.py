"""Checks environments against the contracts this package relies on, so a broken env fails early and says why.

Two levels:
- `check_env(env)`: an env already in the agent's form (what envs.make returns) keeps the agent's contract; raises
  AssertionError naming the first break.
- `diagnose(make)` and the program, for a plug-in as its author wrote it:

      python -m envs.check <id | module:EnvId | package.module:Class> [name=value ...] [--steps N] [--keys RE] [--exclude RE]

  builds the env (name=value pairs are constructor arguments, values read as YAML: camera=true size=64), checks the
  reset/step signatures and return values, its spaces and the dtypes and shapes of what it returns, that reset(seed=)
  makes it reproducible, that episodes end, that rgb_array frames are images, and that the agent can model it (what
  env=gym would train on); prints one line per problem with the fix and exits 0 only when there is none.
  `--suite NAME` checks a task of a third-party suite (entry-point group worldmodels.envs) instead.
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

from envs.spaces import DEFAULT_JOINT_ACTIONS, Leaf, action_problem, adapt, image_problem, leaves, plan_observation
from envs.wrappers import first_line

DEFAULT_STEPS = 1000  # random steps of the plug-in check: enough for most tasks' own time limit to end an episode
SEED_STEPS = 10  # steps replayed to check that reset(seed=...) makes the env reproducible


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
        assert isinstance(result, tuple) and len(result) == 5, f"step must return a 5-tuple, got {type(result).__name__}"
        observation, reward, terminated, truncated, info = result
        where = f"step {index}"
        _check_observation(env.observation_space, observation, where)
        assert isinstance(reward, Real) and not isinstance(reward, (bool, np.bool_)), (
            f"{where}: reward must be a real scalar, got {type(reward).__name__}"
        )
        assert np.isfinite(reward), f"{where}: reward is not finite ({reward})"
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            assert isinstance(flag, (bool, np.bool_)), f"{where}: {name} must be a bool, got {type(flag).__name__}"
        assert isinstance(info, dict), f"{where}: info must be a dict, got {type(info).__name__}"
        if terminated or truncated:
            observation, info = _unpack_reset(env.reset())
            _check_observation(env.observation_space, observation, f"reset after {where}")
    # Reset also works mid-episode (the agent may restart envs at any time).
    observation, info = _unpack_reset(env.reset())
    _check_observation(env.observation_space, observation, "final reset")


def _check_observation_space(space: spaces.Space) -> None:
    assert isinstance(space, spaces.Dict), f"observation space must be a Dict, got {space}"
    assert len(space.spaces) > 0, "observation space Dict is empty"
    for key, value in space.spaces.items():
        assert isinstance(value, spaces.Box), f"observation space key {key!r} must be a Box, got {value}"
        image = len(value.shape) == 3 and value.dtype == np.uint8
        assert len(value.shape) == 1 or image, (
            f"observation space key {key!r} must be a 1-D vector or an (H, W, C) uint8 image, got {value}"
        )
        if image:
            problem = image_problem(value.shape)
            assert problem is None, f"observation space key {key!r} {value}: {problem}"


def _check_action_space(space: spaces.Space) -> None:
    if isinstance(space, spaces.Discrete):
        assert space.start == 0, f"Discrete action space must start at 0, got {space}"
        return
    assert isinstance(space, spaces.Box), f"action space must be Discrete or Box, got {space}"
    assert np.issubdtype(space.dtype, np.floating), f"Box action space must have a float dtype, got {space.dtype}"
    assert np.all(space.low >= -1.0) and np.all(space.high <= 1.0), f"Box action space must lie within [-1, 1], got {space}"


def _unpack_reset(result: Any) -> tuple[Any, dict]:
    assert isinstance(result, tuple) and len(result) == 2, (
        f"reset must return (observation, info), got {type(result).__name__}"
    )
    observation, info = result
    assert isinstance(info, dict), f"reset info must be a dict, got {type(info).__name__}"
    return observation, info


def _check_observation(space: spaces.Dict, observation: Any, where: str) -> None:
    assert isinstance(observation, dict), f"{where}: observation must be a dict, got {type(observation).__name__}"
    assert set(observation) == set(space.spaces), (
        f"{where}: observation keys {sorted(observation)} differ from the space's {sorted(space.spaces)}"
    )
    for key, box in space.spaces.items():
        value = observation[key]
        assert isinstance(value, np.ndarray), f"{where}: observation {key!r} must be a numpy array, got {type(value).__name__}"
        assert value.dtype == box.dtype, f"{where}: observation {key!r} has dtype {value.dtype}, expected {box.dtype}"
        assert value.shape == box.shape, f"{where}: observation {key!r} has shape {value.shape}, expected {box.shape}"
        assert box.contains(value), f"{where}: observation {key!r} is outside its space {box}"


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
    """Every problem of the env `make()` builds, one line each with its fix (empty: it passes). See the module docstring."""
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
    if not isinstance(env, gymnasium.Env):
        problems.add("class", f"the env is {_a(env)}, not a gymnasium.Env: subclass gymnasium.Env")
        raise _Stop
    observation_space, action_space = env.observation_space, env.action_space
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
    try:
        result = env.reset(seed=seed) if seed is not None else env.reset()
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
    _check_raw_observation(env.observation_space, leaves_, observation, f"at {where}", problems)
    return observation


def _step(env: gymnasium.Env, problems: _Problems, leaves_: list[Leaf], action: Any, where: str) -> tuple[Any, float, bool]:
    """(observation, reward, episode ended) of one step, recording every problem of what it returned."""
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
    observation, reward, terminated, truncated, info = result
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
    if not isinstance(info, dict):
        problems.add("step info", f"info at {where} is {_a(info)}: return a dict (e.g. {{}})")
    return observation, float(reward), bool(terminated) or bool(truncated)


def _check_seeding(env: gymnasium.Env, problems: _Problems, leaves_: list[Leaf], seeded: bool) -> None:
    """reset(seed=0) twice, then the same actions, must give the same observations and rewards."""
    if not seeded:
        return
    action_space = env.action_space
    action_space.seed(0)
    actions = [action_space.sample() for _ in range(SEED_STEPS)]
    traces = []
    for _ in range(2):
        trace = [_reset(env, problems, leaves_, "the seeding check", seed=0)]
        for index, action in enumerate(actions):
            observation, reward, ended = _step(env, problems, leaves_, action, f"step {index} of the seeding check")
            trace.append((observation, reward))
            if ended:
                break
        traces.append(trace)
    first, second = traces
    for index, (a, b) in enumerate(zip(first, second)):
        observation_a, reward_a = (a, None) if index == 0 else a
        observation_b, reward_b = (b, None) if index == 0 else b
        differs = [leaf.name for leaf in leaves_ if not _same(_get(observation_a, leaf), _get(observation_b, leaf))]
        if differs or reward_a != reward_b:
            what = f"observation {differs[0]!r}" if differs else "reward"
            _seeding_problem(problems, f"{what} {'right after reset' if index == 0 else f'at step {index - 1}'}")
            return
    if len(first) != len(second):
        _seeding_problem(problems, "episode length")


def _seeding_problem(problems: _Problems, what: str) -> None:
    problems.add("seeding", f"reset(seed=0) twice, then the same actions, gave a different {what}: draw all randomness "
                            "from self.np_random and call super().reset(seed=seed) in reset()")


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
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    except TypeError:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _check_raw_observation(space: spaces.Space, leaves_: list[Leaf], observation: Any, where: str, problems: _Problems) -> None:
    """Each leaf of the observation against its space, named as the agent will name it."""
    if isinstance(space, spaces.Dict):
        if not isinstance(observation, dict):
            problems.add("obs dict", f"the observation {where} is {_a(observation)}, but observation_space is a "
                                     "Dict: return a dict with its keys")
            return
        extra = sorted(map(str, set(observation) - set(space.spaces)))
        if extra:
            problems.add("obs extra", f"the observation {where} has keys {extra} that observation_space does not declare: "
                                      "declare them or leave them out")
    for leaf in leaves_:
        try:
            value = _get(observation, leaf)
        except (KeyError, IndexError, TypeError):
            problems.add(f"obs missing {leaf.name}", f"the observation {where} has no {leaf.name!r}, which observation_space "
                                                     "declares: return every key the space has")
            continue
        _check_leaf(leaf, value, where, problems)


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
    """What the agent will see of the env: observation keys with shapes, and the action space."""
    env = adapt(env_factory(), keys, exclude, joint_actions)
    try:
        observations = ", ".join(f"{key} {box.shape} {box.dtype}" for key, box in env.observation_space.spaces.items())
        return f"observation keys: {observations}; action: {env.action_space}"
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m envs.check",
        description="Check an environment (a Gymnasium id, module:EnvId, or package.module:Class) against the contract "
        "worldmodels relies on; one line per problem, with its fix; exit status 0 only when it passes.",
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
    from envs.load import build, call_factory

    if suite is None:
        return functools.partial(build, target, None, kwargs, checker=False)
    from envs import SUITES, plugin_suites
    from envs.plugins import load_plugin

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
