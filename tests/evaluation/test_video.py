"""GIF encoding and the animated TensorBoard image that stands in for `add_video` (which needs moviepy)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.tbtools import tb_images
from worldmodels.evaluation.video import add_gif, encode_gif, save_gif


def frames(t: int = 5, h: int = 6, w: int = 4) -> np.ndarray:
    """Frame i is flat grey level 40 * i: few colours, so the GIF palette keeps them exactly."""
    return np.stack([np.full((h, w, 3), 40 * i, np.uint8) for i in range(t)])


def gif_frames(data: bytes) -> list[np.ndarray]:
    gif = Image.open(io.BytesIO(data))
    out = []
    for i in range(gif.n_frames):
        gif.seek(i)
        out.append(np.asarray(gif.convert("RGB")))
    return out


def test_gif_round_trip_keeps_frames_and_upscales():
    decoded = gif_frames(encode_gif(frames(), scale=2))
    assert len(decoded) == 5
    for i, frame in enumerate(decoded):
        assert frame.shape == (12, 8, 3)
        np.testing.assert_array_equal(frame, 40 * i)


def test_save_gif_writes_the_encoded_bytes(tmp_path):
    path = save_gif(frames(), tmp_path / "sub" / "clip.gif", scale=1)
    assert path.read_bytes() == encode_gif(frames(), scale=1)


@pytest.mark.parametrize("bad", [np.zeros((0, 4, 4, 3)), np.zeros((3, 4, 4)), np.zeros((3, 4, 4, 1))])
def test_encode_gif_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="frames must be"):
        encode_gif(bad)


def test_add_gif_logs_an_animated_image_tensorboard_reads_back(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        add_gif(writer, "eval/video", frames(), step=7)
        add_gif(writer, "eval/video", encode_gif(frames(3), scale=1), step=9)
    images = tb_images(tmp_path)["eval/video"]
    assert [im.step for im in images] == [7, 9]
    assert (images[0].width, images[0].height) == (4, 6)
    assert images[0].encoded_image_string.startswith(b"GIF8")
    assert [len(gif_frames(im.encoded_image_string)) for im in images] == [5, 3]
