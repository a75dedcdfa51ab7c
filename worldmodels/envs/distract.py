"""Background distraction for MuJoCo pixel observations: moving generated patterns behind the robot.

The background (the skybox, where the segmentation render shows no object, and the floor planes) is replaced by a
pattern that moves every step and is redrawn every episode, while the robot keeps its exact pixels. The reward does
not depend on the background, so a representation that reconstructs every pixel spends capacity on it; this is the
setting where decoder-free objectives are expected to win. Patterns are procedural numpy (nothing is downloaded) and
come from a seeded Generator, so a seeded env gives the same frames every run. mujoco is imported only inside
functions, so importing this module leaves MUJOCO_GL's backend choice to whoever imports mujoco first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DISTRACTIONS = ("none", "noise", "color")


def plane_geoms(model: Any) -> np.ndarray:
    """A bool per geom of a MuJoCo model: True for planes (floors, ground), which count as background."""
    import mujoco

    return np.asarray(model.geom_type) == int(mujoco.mjtGeom.mjGEOM_PLANE)


def background_mask(segmentation: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """(H, W) bool, True where the pixel is background: no object (id -1: the skybox) or a plane geom.

    `segmentation` is MuJoCo's (H, W, 2) render with segmentation=True: object id, then object type; `planes` is
    plane_geoms(model). Sites, tendons and other geoms are foreground.
    """
    import mujoco

    ids, types = segmentation[..., 0], segmentation[..., 1]
    geom = (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0)
    plane = geom & planes[np.where(geom, ids, 0)]
    return (ids < 0) | plane


def composite(frame: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """A new (H, W, 3) uint8 frame: `background` where `mask` is True, `frame` elsewhere (kept exactly)."""
    return np.where(mask[..., None], background, frame).astype(np.uint8, copy=False)


class NoisePattern:
    """Smooth coloured noise: a random periodic grid of RGB values, interpolated with smoothstep weights, drifting at
    a constant velocity and morphing into a fresh random grid every few steps, so it is never a rigid translation."""

    GRID = 16  # grid values per period; the view spans 3 to 8 cells, so the period never shows twice in a frame

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self._rng = rng
        self._rows, self._cols = np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64)
        self._scale = rng.uniform(3, 8) / max(height, width)  # grid cells per pixel
        angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.01, 0.04) * max(height, width)  # pixels per step
        self._velocity = speed * np.array([np.sin(angle), np.cos(angle)])
        self._origin = rng.uniform(0, self.GRID / self._scale, 2)
        self._morph = int(rng.integers(10, 30))  # steps from one grid to the next
        self._grids = self._grid(), self._grid()
        self._t = 0

    def advance(self) -> None:
        self._t += 1
        if self._t % self._morph == 0:
            self._grids = self._grids[1], self._grid()

    def image(self) -> np.ndarray:
        weight = (self._t % self._morph) / self._morph
        grid = (1 - weight) * self._grids[0] + weight * self._grids[1]
        dy, dx = self._origin + self._t * self._velocity
        (top, fy), (left, fx) = _cells(self._rows + dy, self._scale), _cells(self._cols + dx, self._scale)
        rows = grid[top % self.GRID] * (1 - fy)[:, None, None] + grid[(top + 1) % self.GRID] * fy[:, None, None]
        out = rows[:, left % self.GRID] * (1 - fx)[None, :, None] + rows[:, (left + 1) % self.GRID] * fx[None, :, None]
        return out.astype(np.uint8)

    def _grid(self) -> np.ndarray:
        return self._rng.uniform(0, 255, (self.GRID, self.GRID, 3))


class ColorPattern:
    """Plaid of two sinusoidal colour stripes, each with a random orientation, frequency, pair of colours and phase
    speed: a pixel is the mean of the stripes' colours, blended by each stripe's wave, whose phase advances every step."""

    WAVES = 2

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        angle = rng.uniform(0, np.pi, self.WAVES)
        cycles = rng.uniform(1, 4, self.WAVES)  # stripes across the frame
        self._space = 2 * np.pi * cycles[:, None, None] * (np.cos(angle)[:, None, None] * x + np.sin(angle)[:, None, None] * y)
        self._phase = rng.uniform(0, 2 * np.pi, self.WAVES)
        self._speed = rng.uniform(0.15, 0.5, self.WAVES) * rng.choice([-1, 1], self.WAVES)  # radians per step
        self._colors = rng.uniform(0, 255, (2, self.WAVES, 3))
        self._t = 0

    def advance(self) -> None:
        self._t += 1

    def image(self) -> np.ndarray:
        waves = 0.5 + 0.5 * np.sin(self._space + (self._phase + self._t * self._speed)[:, None, None])  # (K, H, W)
        low, high = self._colors
        out = low.mean(0) + np.einsum("khw,kc->hwc", waves, high - low) / self.WAVES
        return out.astype(np.uint8)


PATTERNS = {"noise": NoisePattern, "color": ColorPattern}


class Distractor:
    """The moving background of one env: a new pattern each reset(), one step of motion each advance().

    `background()` is the pattern at the current step (cached, so render() after an observation costs no new
    pattern and shows the same one); seed() restarts the generator, so equal seeds give equal episodes of patterns.
    """

    def __init__(self, kind: str, height: int, width: int, seed: int | None = None):
        if kind not in PATTERNS:
            raise ValueError(f"distract={kind!r} is not a pattern: expected one of {', '.join(PATTERNS)}")
        self._kind, self._shape = kind, (int(height), int(width))
        self._rng = np.random.default_rng(seed)
        self._pattern: NoisePattern | ColorPattern | None = None
        self._cached: np.ndarray | None = None

    def seed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self._pattern = PATTERNS[self._kind](*self._shape, self._rng)
        self._cached = None

    def advance(self) -> None:
        if self._pattern is None:
            raise RuntimeError("Distractor.advance() called before reset()")
        self._pattern.advance()
        self._cached = None

    def background(self) -> np.ndarray:
        if self._pattern is None:
            self.reset()
        if self._cached is None:
            self._cached = self._pattern.image()
        return self._cached


def _cells(pixels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer grid cell and smoothstep weight of the next cell for pixel coordinates (grid `scale` cells per pixel)."""
    cells = pixels * scale
    base = np.floor(cells)
    frac = cells - base
    return base.astype(np.int64), frac * frac * (3 - 2 * frac)
