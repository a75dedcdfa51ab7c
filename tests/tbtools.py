"""Reading back what a run logged to TensorBoard, for tests."""

from __future__ import annotations


def tb_images(log_dir) -> dict[str, list]:
    """Every image event under `log_dir`, by tag (animated GIFs included, as their encoded bytes)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Images(tag) for tag in events.Tags()["images"]}
