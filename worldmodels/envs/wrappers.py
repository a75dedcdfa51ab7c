"""Small composable wrappers that adapt an environment to the agent's contract (see envs.check)."""

from __future__ import annotations

import os
from typing import Any, SupportsFloat

import gymnasium
import numpy as np
from gymnasium import spaces


class DictObs(gymnasium.ObservationWrapper):
    """Puts a Box observation under `key` as float32, so every suite hands the agent the same Dict layout."""

    def __init__(self, env: gymnasium.Env, key: str = "state"):
        super().__init__(env)
        if not key or not isinstance(key, str):
            raise ValueError(f"DictObs key must be a non-empty string, got {key!r}")
        self._key = key
        space = env.observation_space
        if isinstance(space, spaces.Dict):
            self._passthrough = True
            return
        if not isinstance(space, spaces.Box):
            raise TypeError(f"DictObs needs a Box or Dict observation space, got {space}")
        self._passthrough = False
        with np.errstate(over="ignore"):  # float64 bounds beyond float32's range become +-inf, which is what they mean
            low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.observation_space = spaces.Dict({key: spaces.Box(low, high, space.shape, np.float32)})

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        if self._passthrough:
            return observation
        return {self._key: np.asarray(observation, dtype=np.float32)}


class NormalizeAction(gymnasium.ActionWrapper):
    """Exposes a Box action space as [-1, 1] and rescales to the env's bounds.

    The agent's continuous policy is an unsquashed normal, so its samples can leave [-1, 1]; clipping
    happens here, before rescaling, so the env never sees an out-of-bounds action. Non-Box spaces
    (e.g. Discrete) pass through unchanged.
    """

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        space = env.action_space
        self._box = isinstance(space, spaces.Box)
        if not self._box:
            return
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"NormalizeAction needs finite action bounds, got {space}")
        self._low = space.low.astype(np.float64)
        self._high = space.high.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, space.shape, np.float32)

    def action(self, action: Any) -> Any:
        if not self._box:
            return action
        inner = self.env.action_space
        action = np.asarray(action, dtype=np.float64)
        if action.size != self._low.size:
            raise ValueError(f"action has {action.size} elements, expected shape {inner.shape}")
        if np.isnan(action).any():
            raise ValueError("action contains NaN")
        action = np.clip(action.reshape(inner.shape), -1.0, 1.0)
        scaled = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        # Clip again so rounding can never step outside the bounds.
        return np.clip(scaled, self._low, self._high).astype(inner.dtype)


class RenderObservation(gymnasium.ObservationWrapper):
    """Adds the env's render() frame under `key` as uint8 (size, size, 3); keep=False drops the other keys (obs='pixels').

    Meant for envs built with render_mode='rgb_array' that render at the requested size themselves (e.g. Gymnasium's
    MuJoCo tasks with width=height=size), so a frame of any other shape is an error rather than silently resized.
    """

    def __init__(self, env: gymnasium.Env, size: int, key: str = "image", keep: bool = True):
        super().__init__(env)
        if int(size) != size or size < 1:
            raise ValueError(f"RenderObservation size must be an integer >= 1, got {size!r}")
        space = env.observation_space
        if keep and not isinstance(space, spaces.Dict):
            raise TypeError(
                f"RenderObservation with keep=True needs a Dict observation space (use DictObs first), got {space}"
            )
        if env.render_mode != "rgb_array":
            raise ValueError(f"RenderObservation needs an env built with render_mode='rgb_array', got {env.render_mode!r}")
        if keep and key in space.spaces:
            raise ValueError(f"RenderObservation key {key!r} is already an observation key")
        self._key = key
        self._keep = keep
        self._shape = (int(size), int(size), 3)
        image = spaces.Box(0, 255, self._shape, np.uint8)
        self.observation_space = spaces.Dict({**space.spaces, key: image} if keep else {key: image})

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        try:
            frame = self.env.render()
        except gymnasium.error.DependencyNotInstalled as error:
            raise ValueError(f"rendering needs a missing package: {first_line(error)}") from None
        except Exception as error:
            raise rendering_error(error) from error
        frame = np.asarray(frame)
        if frame.shape != self._shape or frame.dtype != np.uint8:
            raise ValueError(f"render() returned a {frame.dtype} frame of shape {frame.shape}, expected uint8 {self._shape}")
        image = np.array(frame, dtype=np.uint8, order="C")  # a copy: renderers reuse (and flip views of) their buffers
        return {**observation, self._key: image} if self._keep else {self._key: image}


class ActionRepeat(gymnasium.Wrapper):
    """Repeats each action `repeat` times and sums the rewards; stops as soon as the episode ends."""

    def __init__(self, env: gymnasium.Env, repeat: int):
        super().__init__(env)
        if int(repeat) != repeat or repeat < 1:
            raise ValueError(f"action repeat must be an integer >= 1, got {repeat!r}")
        self._repeat = int(repeat)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self._repeat):
            observation, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return observation, total, terminated, truncated, info


class TimeLimit(gymnasium.Wrapper):
    """Truncates after `max_steps` agent steps (counted after action repeat, if that wraps inside).

    A step that terminates keeps the inner truncated flag, so the agent bootstraps only on true truncation.
    """

    def __init__(self, env: gymnasium.Env, max_steps: int):
        super().__init__(env)
        if int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"time limit max_steps must be an integer >= 1, got {max_steps!r}")
        self._max_steps = int(max_steps)
        self._steps = 0

    def reset(self, **kwargs) -> tuple[Any, dict[str, Any]]:
        self._steps = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        if self._steps >= self._max_steps and not terminated:
            truncated = True
        return observation, reward, terminated, truncated, info


class SeedOnFirstReset(gymnasium.Wrapper):
    """Uses `seed` for the first reset() that gives none, and seeds the spaces, so a seeded env is reproducible.

    Later resets without a seed continue the env's own generator, so episodes differ but stay deterministic.
    """

    def __init__(self, env: gymnasium.Env, seed: int):
        super().__init__(env)
        self._seed: int | None = int(seed)
        self.action_space.seed(self._seed)
        self.observation_space.seed(self._seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seed = self._seed
        self._seed = None
        return self.env.reset(seed=seed, options=options)


def wrap_common(env: gymnasium.Env, action_repeat: int = 1, time_limit: int = 0, seed: int | None = None) -> gymnasium.Env:
    """The options every suite shares, in one order: action repeat, then the time limit (in agent steps), then seeding."""
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    if time_limit:
        env = TimeLimit(env, time_limit)
    if seed is not None:
        env = SeedOnFirstReset(env, seed)
    return env


def default_mujoco_gl() -> None:
    """Sets MUJOCO_GL=egl when it is unset, so headless machines render without a display.

    MuJoCo and dm_control read MUJOCO_GL once, when first imported, and their default (GLFW) needs a display;
    call this before importing them. An explicit setting (e.g. osmesa) is left alone.
    """
    if not os.environ.get("MUJOCO_GL"):
        os.environ["MUJOCO_GL"] = "egl"


def rendering_error(error: BaseException) -> RuntimeError:
    """A one-line RuntimeError for a MuJoCo rendering failure, saying which Debian packages provide the GL backend."""
    backend = os.environ.get("MUJOCO_GL") or "unset"
    return RuntimeError(
        f"MuJoCo rendering failed with MUJOCO_GL={backend} ({type(error).__name__}: {first_line(error)}); on Debian "
        "`apt-get install libegl1 libgl1-mesa-dri` for MUJOCO_GL=egl, or `apt-get install libosmesa6` for MUJOCO_GL=osmesa "
        "(MUJOCO_GL=glfw needs a display)"
    )


def first_line(error: BaseException) -> str:
    """The first line of an exception's message; some GL errors fail to format, which must not hide the original."""
    try:
        text = str(error).strip()
    except Exception:  # noqa: BLE001 - e.g. PyOpenGL's EGLError, whose str() can itself fail
        text = ""
    return text.splitlines()[0] if text else "no message"
