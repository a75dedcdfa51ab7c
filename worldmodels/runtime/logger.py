"""Run outputs: metrics.jsonl, TensorBoard events and a console progress bar."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tqdm import tqdm


class Logger:
    """Writes one JSON object per logging step (env step under `step`) and the same scalars to TensorBoard."""

    def __init__(self, run_dir: str | Path, total_steps: int, initial_step: int = 0, progress: bool = True):
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only runs need it

        self.run_dir = Path(run_dir)
        self.metrics = open(self.run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - open for the run's length, closed by close()
        # purge_step hides events a killed run wrote after its last checkpoint.
        self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=initial_step or None)
        self.bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True, mininterval=1.0, disable=not progress)
        self.step = initial_step

    def write(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.metrics.write(json.dumps({"step": int(step), **clean}) + "\n")
        self.metrics.flush()
        for key, value in clean.items():
            self.tb.add_scalar(key, value, step)
        self.tb.flush()

    def progress(self, step: int, **postfix: float) -> None:
        """Advance the bar to `step`; postfix values (last returns, updates) show beside it."""
        self.bar.update(step - self.step)
        self.step = step
        if postfix:
            self.bar.set_postfix({k: f"{v:.1f}" if isinstance(v, float) else v for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()
        self.tb.close()


class NullLogger:
    """The logger of ranks other than 0 under torchrun: rank 0 alone writes metrics, events and the progress bar."""

    tb = None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def progress(self, step: int, **postfix: float) -> None:
        pass

    def close(self) -> None:
        pass


def truncate_metrics(path: Path, step: int) -> None:
    """Drop lines past `step` (written after the checkpoint a run resumes from) and any torn last line.

    Keeps `step` monotone in metrics.jsonl across kills; rewritten atomically.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
