"""Videos of image observations: GIF files (Pillow, no codec to install) and frame strips for TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_gif(frames: np.ndarray, path: str | Path, fps: int = 15, scale: int = 2) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF, upscaled `scale` times so 64x64 frames are visible."""
    from PIL import Image

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 with T >= 1, got {frames.shape}")
    if scale > 1:
        frames = frames.repeat(scale, 1).repeat(scale, 2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path


def comparison_frames(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Side by side per frame: truth | prediction | absolute error, all (T, H, W, 3) uint8."""
    truth = truth.astype(np.int16)
    pred = np.clip(pred, 0, 255).astype(np.int16)
    error = np.abs(truth - pred)
    return np.concatenate([truth, pred, error], axis=2).astype(np.uint8)


def frame_strip(frames: np.ndarray, count: int = 8) -> np.ndarray:
    """`count` evenly spaced frames side by side, (H, count * W, 3): a still for TensorBoard."""
    index = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return np.concatenate(list(frames[index]), axis=1)
