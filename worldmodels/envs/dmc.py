"""DeepMind Control Suite: proprioceptive vectors and/or camera images, continuous actions in [-1, 1].

dm_control is imported only when a task is built, so the rest of the package works without it. MUJOCO_GL defaults to
egl then, which only takes effect if nothing imported mujoco or dm_control before (they pick the GL backend once).
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from worldmodels.envs.distract import DISTRACTIONS, Distractor, background_mask, composite, plane_geoms
from worldmodels.envs.wrappers import NormalizeAction, default_mujoco_gl, rendering_error, wrap_common

OBS_MODES = ("proprio", "pixels", "both")
NOT_INSTALLED = "dm-control is not installed: pip install -e '.[dmc]' (installs dm-control 1.0.50 and mujoco 3.17.0)"


def make_dmc(
    task: str,
    obs: str = "proprio",
    action_repeat: int = 2,
    size: int = 64,
    camera: int = -1,
    time_limit: int = 0,
    seed: int | None = None,
    distract: str = "none",
    **kwargs,
) -> gymnasium.Env:
    """Build the DMC `task`, named "domain-task" (e.g. "walker-walk", "ball_in_cup-catch"), for the agent's contract.

    obs: "proprio" -> {"state": float32 (n,)}, every proprioceptive array flattened in sorted key order; "pixels" ->
    {"image": uint8 (size, size, 3)} from `camera` (-1: camera 2 for quadruped, else 0); "both" -> both keys. Only
    pixels render, which costs far more than the physics. Episodes end at DMC's own 1000 control steps (truncated),
    or terminate where the task says so (discount 0). action_repeat=2 is the usual DMC setting; time_limit counts
    agent steps. `seed` seeds the task's random state, so equal seeds and actions give equal observations.
    distract: "none", or "noise" / "color" to replace the background of the pixels (sky and floor) with a pattern that
    moves every step and is redrawn every episode, seeded by `seed` too (worldmodels/envs/distract.py).
    """
    if kwargs:
        raise ValueError(f"unknown options for the dmc suite: {', '.join(sorted(kwargs))}")
    if obs not in OBS_MODES:
        raise ValueError(f"obs={obs!r} is not supported: the dmc suite has obs='proprio', 'pixels' or 'both'")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    if int(camera) != camera or camera < -1:
        raise ValueError(f"camera must be an integer >= 0, or -1 for the domain's default, got {camera!r}")
    check_distract(distract, obs)
    suite = _import_suite()
    domain, name = split_task(task, suite.ALL_TASKS)
    env = suite.load(domain, name, task_kwargs={"random": seed})
    camera = (2 if domain == "quadruped" else 0) if camera == -1 else int(camera)
    ncam = env.physics.model.ncam
    if obs != "proprio" and camera >= ncam:
        env.close()
        raise ValueError(f"camera {camera} does not exist: the {domain} domain has {ncam} cameras")
    adapted = NormalizeAction(DMCEnv(env, obs=obs, size=int(size), camera=camera, distract=distract))
    return wrap_common(adapted, action_repeat, time_limit, seed)


class DMCEnv(gymnasium.Env):
    """Gymnasium view of a dm_control environment; actions are in the task's own bounds (NormalizeAction maps [-1, 1]).

    DMC ends every episode with a LAST time step: discount 0 marks a true terminal state (terminated), anything else
    its time limit (truncated, so the agent bootstraps). Stepping after the end raises instead of auto-resetting as
    dm_env does, so a missed reset shows up.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(self, env: Any, obs: str = "proprio", size: int = 64, camera: int = 0, distract: str = "none"):
        if obs not in OBS_MODES:
            raise ValueError(f"obs={obs!r} is not supported: the dmc suite has obs='proprio', 'pixels' or 'both'")
        check_distract(distract, obs)
        self._env = env
        self._proprio = obs in ("proprio", "both")
        self._pixels = obs in ("pixels", "both")
        self._size = int(size)
        self._camera = int(camera)
        self.render_mode = "rgb_array"
        self._distractor = None if distract == "none" else Distractor(distract, self._size, self._size)
        self._planes = None if self._distractor is None else plane_geoms(env.physics.model)
        self._cameras = KeptCameras()  # the dm_control Camera of the renders, built on first use
        observations = {}
        if self._proprio:
            specs = env.observation_spec()
            self._keys = sorted(specs)
            dim = sum(int(np.prod(specs[key].shape)) for key in self._keys)
            observations["state"] = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        if self._pixels:
            observations["image"] = spaces.Box(0, 255, (self._size, self._size, 3), np.uint8)
        self.observation_space = spaces.Dict(observations)
        action = env.action_spec()
        low = np.broadcast_to(action.minimum, action.shape).astype(np.float64)
        high = np.broadcast_to(action.maximum, action.shape).astype(np.float64)
        self.action_space = spaces.Box(low, high, action.shape, np.float64)
        self._done = True
        self._closed = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)  # the same state as task_kwargs={"random": seed} gives a new task
            if self._distractor is not None:
                self._distractor.seed(seed)
        time_step = self._env.reset()
        if self._distractor is not None:
            self._distractor.reset()
        self._done = False
        return self._observation(time_step), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("DMCEnv.step() called before reset() or after the episode ended")
        time_step = self._env.step(action)
        if self._distractor is not None:
            self._distractor.advance()
        terminated, truncated = episode_flags(time_step)
        self._done = terminated or truncated
        reward = 0.0 if time_step.reward is None else float(time_step.reward)
        return self._observation(time_step), reward, terminated, truncated, {}

    def render(self) -> np.ndarray:
        return self._render()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cameras.free()
            self._env.close()
            self._env.physics.free()  # releases the GL context now rather than at interpreter exit

    def _observation(self, time_step: Any) -> dict[str, np.ndarray]:
        observation = {}
        if self._proprio:
            parts = [np.asarray(time_step.observation[key], dtype=np.float32).ravel() for key in self._keys]
            observation["state"] = np.concatenate(parts)
        if self._pixels:
            observation["image"] = self._render()
        return observation

    def _render(self) -> np.ndarray:
        try:
            camera = self._cameras.get(self._env.physics, self._size, self._size, self._camera)
            frame = np.array(camera.render(), dtype=np.uint8, order="C")  # a copy: the camera reuses its buffer,
            if self._distractor is not None:  # which this (H, W, 2) render of object ids and types overwrites
                segmentation = camera.render(segmentation=True)
        except Exception as error:
            raise rendering_error(error) from error
        if self._distractor is not None:
            return composite(frame, background_mask(segmentation, self._planes), self._distractor.background())
        return frame


class KeptCameras:
    """dm_control Cameras kept for the life of an env, one per (height, width, camera_id) of one physics.

    physics.render(height, width, camera_id=...) builds a new Camera, and allocates its scene, on every call: more than
    a small render itself costs. A kept Camera's render() gives the same pixels (and segmentation=True the same ids).
    Cameras of another physics object (a reloaded model) are freed and rebuilt; free() releases them all.
    """

    def __init__(self) -> None:
        self._physics: Any = None
        self._cameras: dict[tuple[int, int, int], Any] = {}

    def get(self, physics: Any, height: int, width: int, camera_id: int) -> Any:
        if physics is not self._physics:
            self.free()
            self._physics = physics
        key = (int(height), int(width), int(camera_id))
        if key not in self._cameras:
            from dm_control.mujoco.engine import Camera

            self._cameras[key] = Camera(physics, height=key[0], width=key[1], camera_id=key[2])
        return self._cameras[key]

    def free(self) -> None:
        for camera in self._cameras.values():
            camera.scene.free()  # as physics.render frees each of its cameras' scenes
        self._cameras.clear()
        self._physics = None


def check_distract(distract: str, obs: str) -> None:
    """A one-line ValueError for an unknown distract value, or a distraction without pixels to distract."""
    if distract not in DISTRACTIONS:
        raise ValueError(f"distract={distract!r} is not supported: the dmc suite has distract='none', 'noise' or 'color'")
    if distract != "none" and obs == "proprio":
        raise ValueError(f"distract={distract!r} needs pixels: set obs='pixels' or 'both', or distract='none' with obs='proprio'")


def episode_flags(time_step: Any) -> tuple[bool, bool]:
    """(terminated, truncated) for a dm_env TimeStep: only a LAST step ends the episode, and its discount says how."""
    if not time_step.last():
        return False, False
    terminated = time_step.discount is not None and float(time_step.discount) == 0.0
    return terminated, not terminated


def split_task(task: str, all_tasks: Any) -> tuple[str, str]:
    """Splits "domain-task" at the first "-" (no domain name contains one) and checks the pair is a suite task."""
    domain, _, name = str(task).partition("-")
    if (domain, name) in set(all_tasks):
        return domain, name
    known = [f"{d}-{t}" for d, t in all_tasks]
    close = difflib.get_close_matches(str(task), known, n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "names are 'domain-task', e.g. 'walker-walk'"
    raise ValueError(f"unknown DeepMind Control task {task!r}; {hint}")


def _import_suite() -> Any:
    """Imports dm_control.suite headless-ready; a GL backend that fails to load breaks the import itself."""
    default_mujoco_gl()
    try:
        from dm_control import suite
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in ("dm_control", "mujoco"):
            raise ValueError(NOT_INSTALLED) from None
        raise ValueError(f"dm-control cannot be imported, it needs the missing package {error.name!r}") from None
    except Exception as error:
        raise rendering_error(error) from error
    return suite
