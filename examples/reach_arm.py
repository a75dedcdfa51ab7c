"""A small MuJoCo robot as a plain `gymnasium.Env`: a two-link planar arm that reaches for a target.

Observation, a Dict (proprio + camera):
    joints  float32 (6,): cos and sin of both joint angles, and both joint velocities
    target  float32 (2,): the target's x, y on the table
    camera  uint8 (64, 64, 3): a top-down view (only with camera=True, the default)
Action: Box(-1, 1, (2,)): the two motor torques. Reward: minus the fingertip's distance to the target (metres).
Episodes are truncated after `episode_steps` steps (100, 5 s of simulated time); a new target is drawn each reset.

Train it (see docs/plugging-in.md):
    python -m worldmodels.train env=gym env.entry_point=examples.reach_arm:ReachArm env.id=ReachArm model=debug
or check it:
    python -m worldmodels.envs.check examples.reach_arm:ReachArm
Importing this module also registers the Gymnasium id `ReachArm-v0`, so `env.id=examples.reach_arm:ReachArm-v0` works.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

ARM_XML = """
<mujoco model="reach_arm">
  <visual>
    <quality shadowsize="0"/>
    <global offwidth="256" offheight="256"/>
  </visual>
  <option timestep="0.01">
    <flag contact="disable"/>
  </option>
  <worldbody>
    <light pos="0 0 1" dir="0 0 -1" castshadow="false"/>
    <camera name="top" pos="0 0 0.6"/>
    <geom name="table" type="plane" size="0.3 0.3 0.01" rgba="0.85 0.85 0.85 1"/>
    <body name="upper" pos="0 0 0.02">
      <joint name="shoulder" type="hinge" axis="0 0 1" damping="0.02"/>
      <geom type="capsule" fromto="0 0 0 0.1 0 0" size="0.012" rgba="0.2 0.4 0.8 1"/>
      <body name="lower" pos="0.1 0 0">
        <joint name="elbow" type="hinge" axis="0 0 1" range="-2.6 2.6" limited="true" damping="0.02"/>
        <geom type="capsule" fromto="0 0 0 0.1 0 0" size="0.01" rgba="0.2 0.7 0.9 1"/>
        <site name="tip" pos="0.1 0 0" size="0.015" rgba="1 0.5 0 1"/>
      </body>
    </body>
    <body name="target" mocap="true" pos="0.1 0.1 0.02">
      <geom type="sphere" size="0.02" rgba="0.9 0.1 0.1 1"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="shoulder" gear="0.05" ctrlrange="-1 1" ctrllimited="true"/>
    <motor joint="elbow" gear="0.05" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


class ReachArm(gymnasium.Env):
    """Two-link planar arm reaching a target; see the module docstring. `render_mode='rgb_array'` renders the camera
    at width x height (what env.obs=pixels asks for); `camera` puts a size x size view in the observation."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, camera: bool = True, size: int = 64, episode_steps: int = 100, frame_skip: int = 5,
                 render_mode: str | None = None, width: int = 64, height: int = 64):
        if camera or render_mode:
            # MuJoCo picks its GL backend when first imported, and its default (GLFW) needs a display: EGL renders
            # headless (apt-get install libegl1 libgl1-mesa-dri on Debian). A setting of yours is kept.
            os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported: use None or 'rgb_array'")
        self._mujoco = mujoco
        self.model = mujoco.MjModel.from_xml_string(ARM_XML)
        self._data = mujoco.MjData(self.model)  # private: envs.sim_state would treat a public `data` as restorable
        self._tip = self.model.site("tip").id
        self.camera, self.size, self.episode_steps, self.frame_skip = bool(camera), int(size), int(episode_steps), int(frame_skip)
        self.render_mode, self.width, self.height = render_mode, int(width), int(height)
        self._renderers: dict[tuple[int, int], Any] = {}
        observations = {
            "joints": spaces.Box(-np.inf, np.inf, (6,), np.float32),
            "target": spaces.Box(-0.2, 0.2, (2,), np.float32),
        }
        if self.camera:
            observations["camera"] = spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        self.observation_space = spaces.Dict(observations)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._mujoco.mj_resetData(self.model, self._data)
        self._data.qpos[:] = self.np_random.uniform(-np.pi, np.pi, 2)
        radius, angle = self.np_random.uniform(0.06, 0.18), self.np_random.uniform(-np.pi, np.pi)
        self._data.mocap_pos[0, :2] = radius * np.cos(angle), radius * np.sin(angle)
        self._mujoco.mj_forward(self.model, self._data)
        self._steps = 0
        return self._observation(), {}

    def step(self, action):
        self._data.ctrl[:] = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self._mujoco.mj_step(self.model, self._data, nstep=self.frame_skip)
        self._steps += 1
        distance = float(np.linalg.norm(self._data.site_xpos[self._tip, :2] - self._data.mocap_pos[0, :2]))
        truncated = self._steps >= self.episode_steps
        return self._observation(), -distance, False, truncated, {"distance": distance}

    def _observation(self) -> dict[str, np.ndarray]:
        angles, velocities = self._data.qpos[:2], self._data.qvel[:2]
        observation = {
            "joints": np.concatenate([np.cos(angles), np.sin(angles), velocities]).astype(np.float32),
            "target": self._data.mocap_pos[0, :2].astype(np.float32),
        }
        if self.camera:
            observation["camera"] = self._render(self.size, self.size)
        return observation

    def _render(self, width: int, height: int) -> np.ndarray:
        renderer = self._renderers.get((width, height))
        if renderer is None:
            renderer = self._renderers[(width, height)] = self._mujoco.Renderer(self.model, height=height, width=width)
        renderer.update_scene(self._data, camera="top")
        return np.array(renderer.render(), dtype=np.uint8)  # a copy: the renderer reuses its buffer

    def render(self) -> np.ndarray | None:
        return self._render(self.width, self.height) if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


if "ReachArm-v0" not in gymnasium.registry:
    gymnasium.register(id="ReachArm-v0", entry_point=ReachArm)
