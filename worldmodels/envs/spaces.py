"""Any Gymnasium observation and action space, in the form the agent models.

Observations become a flat Dict of float32 vectors and (H, W, C) uint8 images (`FlatObservation`):

- Dict and Tuple spaces (nested too) are walked down to their leaves; a leaf is named by its path, the
  parts joined with `/` (`{"arm": {"joints": ...}}` -> `arm/joints`, a Tuple's items by their index,
  `0`, `1`, ...). A leaf at the top (a plain Box, Discrete, ...) is named `state`, or `image` if it is one.
  Dots in names become `_` (PyTorch module names cannot hold them).
- uint8 Box leaves of 3 dimensions are images: (H, W, C), or (C, H, W) when the first side is at most 4
  and the last more than 4 (moved to (H, W, C)). Images must be square with a power-of-two side >= 8
  (e.g. 64x64): the agent's CNN halves the side down to 4.
- Every other Box (scalars, vectors, any float or integer array) is flattened to a float32 vector;
  Discrete becomes a one-hot vector, MultiDiscrete concatenated one-hots, MultiBinary a 0/1 vector.
- `keys` and `exclude` are regular expressions matched against the whole name (re.fullmatch): only
  leaves that match `keys` and not `exclude` are kept ("" excludes nothing), like the official
  `enc.spaces`. Goal-conditioned Dicts (`observation`, `achieved_goal`, `desired_goal`) are plain keys.
- Text, Graph, Sequence and OneOf leaves have no fixed-size array form: they are refused, naming the
  key, unless excluded.

Actions become Discrete (from 0) or a Box in [-1, 1] (`FlatAction`):

- Discrete(n, start) -> Discrete(n); the start is added back.
- Box with finite bounds, any shape -> a flat Box in [-1, 1], clipped, rescaled to the bounds and
  reshaped (integer Boxes are rounded). An unbounded Box is refused: there is nothing to rescale to.
- MultiDiscrete and MultiBinary with at most `joint_actions` combinations -> one Discrete over every
  combination (the policy picks whole actions, as it does for Atari's 18); more combinations -> a Box in
  [-1, 1] with one component per sub-action, each cut into equal buckets (MultiBinary: on when >= 0).
- Tuple, Dict, Text, Graph, Sequence and OneOf action spaces are refused.

Every refusal is a one-line ValueError (`UnsupportedSpace`) naming the key and the space, with the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

# Keys every stored step has besides the observation (worldmodels.runtime.driver, worldmodels.agent.agent.LATENT_KEYS).
RESERVED_KEYS = ("action", "reward", "is_first", "is_last", "is_terminal")
RESERVED_PREFIXES = ("latent/",)
DEFAULT_JOINT_ACTIONS = 64


class UnsupportedSpace(ValueError):
    """An observation or action space the agent cannot model: one line naming the key, the space and the fix."""


@dataclass(frozen=True)
class Leaf:
    """One observation array: its flat name, where it sits in the nested observation, and how it is converted."""

    name: str
    path: tuple[Any, ...]
    space: spaces.Space
    kind: str  # vector, image, chw (image stored channels first), onehot, multionehot, binary, or unsupported
    reason: str = ""

    @property
    def out_space(self) -> spaces.Box:
        space = self.space
        if self.kind == "image":
            return spaces.Box(0, 255, space.shape, np.uint8)
        if self.kind == "chw":
            return spaces.Box(0, 255, (*space.shape[1:], space.shape[0]), np.uint8)
        if self.kind == "vector":
            with np.errstate(over="ignore"):  # float64 bounds beyond float32's range become +-inf, which is what they mean
                low = np.asarray(space.low, np.float32).reshape(-1)
                high = np.asarray(space.high, np.float32).reshape(-1)
            return spaces.Box(low, high, low.shape, np.float32)
        if self.kind == "onehot":
            size = int(space.n)
        elif self.kind == "multionehot":
            size = int(space.nvec.sum())
        else:  # binary
            size = int(np.prod(space.shape))
        return spaces.Box(0.0, 1.0, (size,), np.float32)

    def convert(self, value: Any) -> np.ndarray:
        """The leaf's value as the agent's array (always a fresh copy: simulators reuse their buffers)."""
        space = self.space
        if self.kind == "image":
            return np.array(value, dtype=np.uint8, order="C")
        if self.kind == "chw":
            return np.ascontiguousarray(np.moveaxis(np.asarray(value, dtype=np.uint8), 0, -1))
        if self.kind == "vector":
            return np.array(value, dtype=np.float32).reshape(-1)
        if self.kind == "binary":
            return np.array(value, dtype=np.float32).reshape(-1)
        if self.kind == "onehot":
            out = np.zeros(int(space.n), np.float32)
            out[int(np.asarray(value).item()) - int(space.start)] = 1.0
            return out
        nvec, start = space.nvec.reshape(-1), space.start.reshape(-1)
        out = np.zeros(int(nvec.sum()), np.float32)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        out[offsets + np.asarray(value).reshape(-1) - start] = 1.0
        return out


def image_problem(shape: tuple[int, ...]) -> str | None:
    """Why an (H, W, C) image cannot go to the agent's CNN, or None."""
    height, width = shape[0], shape[1]
    if height != width or height < 8 or height & (height - 1):
        return "images must be square with a power-of-two side >= 8 (e.g. 64x64): resize it in the env"
    return None


def _leaf(name: str, path: tuple[Any, ...], space: spaces.Space) -> Leaf:
    if isinstance(space, spaces.Box):
        if not (np.issubdtype(space.dtype, np.number) or space.dtype == np.bool_):
            return Leaf(name, path, space, "unsupported", f"a Box of {space.dtype} is not numeric: return numbers")
        if int(np.prod(space.shape)) == 0:
            return Leaf(name, path, space, "unsupported", "it holds no values: leave it out of the space")
        if space.dtype == np.uint8 and len(space.shape) == 3:
            chw = space.shape[0] <= 4 < space.shape[-1]
            hwc = (*space.shape[1:], space.shape[0]) if chw else space.shape
            problem = image_problem(hwc)
            if problem:
                return Leaf(name, path, space, "unsupported", problem)
            return Leaf(name, path, space, "chw" if chw else "image")
        return Leaf(name, path, space, "vector")
    if isinstance(space, spaces.Discrete):
        return Leaf(name, path, space, "onehot")
    if isinstance(space, spaces.MultiDiscrete):
        return Leaf(name, path, space, "multionehot")
    if isinstance(space, spaces.MultiBinary):
        return Leaf(name, path, space, "binary")
    kind = type(space).__name__
    reason = f"a {kind} space has no fixed-size array form: give it one in the env (e.g. a Box of ids or features)"
    return Leaf(name, path, space, "unsupported", reason)


def leaves(space: spaces.Space) -> list[Leaf]:
    """Every leaf of `space`, named as the module docstring says, in the space's own order."""
    found: list[Leaf] = []

    def walk(sub: spaces.Space, parts: tuple[str, ...], path: tuple[Any, ...]) -> None:
        if isinstance(sub, spaces.Dict):
            for key, value in sub.spaces.items():
                walk(value, (*parts, str(key).replace(".", "_")), (*path, key))
        elif isinstance(sub, spaces.Tuple):
            for index, value in enumerate(sub.spaces):
                walk(value, (*parts, str(index)), (*path, index))
        else:
            found.append(_leaf("/".join(parts), path, sub))

    walk(space, (), ())
    if len(found) == 1 and found[0].name == "":
        leaf = found[0]
        image = isinstance(leaf.space, spaces.Box) and leaf.space.dtype == np.uint8 and len(leaf.space.shape) == 3
        name = "image" if image else "state"
        found = [Leaf(name, leaf.path, leaf.space, leaf.kind, leaf.reason)]
    return found


def _regex(pattern: Any, option: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise TypeError(f"{option}={pattern!r} is invalid: expected a regular expression")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{option}={pattern!r} is not a valid regular expression ({error})") from None


def plan_observation(space: spaces.Space, keys: str = ".*", exclude: str = "") -> tuple[list[Leaf], list[str]]:
    """The leaves kept by `keys`/`exclude`, and every problem found (one line each); an empty list means it fits."""
    if not isinstance(space, spaces.Space):
        return [], [(f"observation_space is a {type(space).__name__}, not a gymnasium.spaces.Space: set self.observation_space "
                     "in the env's __init__")]
    keep, drop = _regex(keys, "keys"), _regex(exclude, "exclude")
    found = leaves(space)
    selected = [leaf for leaf in found if keep.fullmatch(leaf.name) and not (exclude and drop.fullmatch(leaf.name))]
    problems = []
    if not selected:
        names = ", ".join(leaf.name for leaf in found) or "none"
        problems.append(f"no observation key is left: keys={keys!r} and exclude={exclude!r} (matched against the whole name) "
                        f"select none of the keys {names}")
    seen: set[str] = set()
    for leaf in selected:
        where = f"observation {leaf.name!r} {leaf.space}"
        if leaf.kind == "unsupported":
            problems.append(f"{where} is not supported: {leaf.reason}; or drop it with env.exclude={re.escape(leaf.name)}")
        elif leaf.name in RESERVED_KEYS or leaf.name.startswith(RESERVED_PREFIXES):
            problems.append(f"{where} is not supported: {leaf.name!r} is a key every stored step has besides the observation "
                            f"({', '.join(RESERVED_KEYS)}, latent/*); rename it in the env or drop it with "
                            f"env.exclude={re.escape(leaf.name)}")
        elif leaf.name in seen:
            problems.append(f"{where} is not supported: two leaves are both named {leaf.name!r} (keys joined with '/', "
                            "dots as '_'); rename one in the env")
        seen.add(leaf.name)
    return selected, problems


class FlatObservation(gymnasium.ObservationWrapper):
    """Any supported observation space -> a flat Dict of float32 vectors and (H, W, C) uint8 images (see above)."""

    def __init__(self, env: gymnasium.Env, keys: str = ".*", exclude: str = ""):
        super().__init__(env)
        self.leaves, problems = plan_observation(env.observation_space, keys, exclude)
        if problems:
            raise UnsupportedSpace(problems[0])
        self.observation_space = spaces.Dict({leaf.name: leaf.out_space for leaf in self.leaves})

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        out = {}
        for leaf in self.leaves:
            value = observation
            for part in leaf.path:
                value = value[part]
            out[leaf.name] = leaf.convert(value)
        return out


def action_problem(space: Any, joint_actions: int = DEFAULT_JOINT_ACTIONS) -> str | None:
    """Why `space` cannot be the agent's action space (one line naming it, with the fix), or None."""
    if not isinstance(space, spaces.Space):
        return (f"action_space is a {type(space).__name__}, not a gymnasium.spaces.Space: set self.action_space "
                "in the env's __init__")
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return None
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.number):
            return f"action {space} is not supported: a Box of {space.dtype} is not numeric"
        if int(np.prod(space.shape)) == 0:
            return f"action {space} is not supported: it holds no values"
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            return (f"action {space} is not supported: the policy acts in [-1, 1] and rescales to the bounds, so a Box action "
                    "needs finite low and high (e.g. the actuators' limits)")
        return None
    return (f"action {space} is not supported: use Discrete, Box (finite bounds), MultiDiscrete or MultiBinary; a "
            f"{type(space).__name__} action space has no single vector form")


class FlatAction(gymnasium.ActionWrapper):
    """Any supported action space -> Discrete (from 0) or a flat Box in [-1, 1] (see the module docstring).

    The agent's continuous policy is an unsquashed normal, so its samples can leave [-1, 1]: they are clipped here.
    """

    def __init__(self, env: gymnasium.Env, joint_actions: int = DEFAULT_JOINT_ACTIONS):
        super().__init__(env)
        if isinstance(joint_actions, bool) or int(joint_actions) != joint_actions or joint_actions < 0:
            raise ValueError(f"joint_actions must be an integer >= 0, got {joint_actions!r}")
        space = env.action_space
        problem = action_problem(space, joint_actions)
        if problem:
            raise UnsupportedSpace(problem)
        self.mode = "discrete"
        if isinstance(space, spaces.Discrete):
            self.action_space = spaces.Discrete(int(space.n))
            return
        if isinstance(space, spaces.Box):
            self.mode = "box"
            self._low = space.low.astype(np.float64).reshape(-1)
            self._high = space.high.astype(np.float64).reshape(-1)
            self.action_space = spaces.Box(-1.0, 1.0, self._low.shape, np.float32)
            return
        if isinstance(space, spaces.MultiBinary):
            self._nvec = np.full(int(np.prod(space.shape)), 2, np.int64)
            self._start = np.zeros_like(self._nvec)
        else:
            self._nvec = space.nvec.reshape(-1).astype(np.int64)
            self._start = space.start.reshape(-1).astype(np.int64)
        combinations = math.prod(int(n) for n in self._nvec)
        if combinations <= joint_actions:
            self.mode = "joint"
            self.action_space = spaces.Discrete(combinations)
        else:
            self.mode = "buckets"
            self.action_space = spaces.Box(-1.0, 1.0, self._nvec.shape, np.float32)

    def action(self, action: Any) -> Any:
        inner = self.env.action_space
        if self.mode in ("discrete", "joint"):
            value = np.asarray(action)
            integral = value.size == 1 and (np.issubdtype(value.dtype, np.integer) or float(value.item()).is_integer())
            index = int(value.item()) if integral else -1
            if not 0 <= index < self.action_space.n:
                raise ValueError(f"action must be an integer in [0, {self.action_space.n}), got {action!r}")
            if self.mode == "discrete":
                return int(inner.start) + index
            values = np.asarray(np.unravel_index(index, tuple(self._nvec)), np.int64)
            return self._multi(values)
        vector = np.asarray(action, dtype=np.float64).reshape(-1)
        if vector.size != self.action_space.shape[0]:
            raise ValueError(f"action has {vector.size} elements, expected {self.action_space.shape[0]}")
        if np.isnan(vector).any():
            raise ValueError("action contains NaN")
        vector = np.clip(vector, -1.0, 1.0)
        if self.mode == "buckets":
            buckets = np.floor((vector + 1.0) * 0.5 * self._nvec).astype(np.int64)
            return self._multi(np.minimum(buckets, self._nvec - 1))
        scaled = self._low + (vector + 1.0) * 0.5 * (self._high - self._low)
        if np.issubdtype(inner.dtype, np.integer):
            scaled = np.rint(scaled)
        # Clip again so rounding can never step outside the bounds.
        return np.clip(scaled, self._low, self._high).reshape(inner.shape).astype(inner.dtype)

    def _multi(self, values: np.ndarray) -> np.ndarray:
        inner = self.env.action_space
        return (values + self._start).reshape(inner.shape).astype(inner.dtype)


def adapt(env: gymnasium.Env, keys: str = ".*", exclude: str = "", joint_actions: int = DEFAULT_JOINT_ACTIONS,
          observation: bool = True) -> gymnasium.Env:
    """`env` with its observations (unless `observation` is False) and actions in the agent's form; closes it on refusal."""
    try:
        if observation:
            env = FlatObservation(env, keys, exclude)
        return FlatAction(env, joint_actions)
    except ValueError:
        env.close()
        raise
