"""Videos of image observations: GIF files and animated TensorBoard images (Pillow only, no codec to install)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def encode_gif(frames: np.ndarray, fps: int = 15, scale: int = 2) -> bytes:
    """(T, H, W, 3) uint8 frames as the bytes of a looping GIF, upscaled `scale` times so 64x64 frames are visible."""
    from PIL import Image

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 with T >= 1, got {frames.shape}")
    if scale > 1:
        frames = frames.repeat(scale, 1).repeat(scale, 2)
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return buffer.getvalue()


def save_gif(frames: np.ndarray, path: str | Path, fps: int = 15, scale: int = 2) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF file (see `encode_gif`)."""
    data = encode_gif(frames, fps, scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def add_gif(writer, tag: str, gif: bytes | np.ndarray, step: int) -> None:
    """Log a GIF (its bytes, or (T, H, W, 3) frames to encode) to TensorBoard as an animated image, which the
    Images tab plays. `SummaryWriter.add_video` writes this same summary but needs moviepy to encode it."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    data = gif if isinstance(gif, bytes) else encode_gif(gif, scale=1)
    width, height = Image.open(io.BytesIO(data)).size
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def comparison_frames(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Side by side per frame: truth | prediction | absolute error, all (T, H, W, 3) uint8."""
    truth = truth.astype(np.int16)
    pred = np.clip(pred, 0, 255).astype(np.int16)
    error = np.abs(truth - pred)
    return np.concatenate([truth, pred, error], axis=2).astype(np.uint8)
