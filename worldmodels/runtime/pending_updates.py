"""Updates whose results are still on the device: read back together after the next env step, not one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldmodels.agent.agent import host_arrays
from worldmodels.replay.buffer import Replay, ReplayStreams
from worldmodels.runtime.errors import UserError


class PendingUpdates:
    """Each update's skip flag (a 0-d device tensor) and, with replay context, the posterior latents of its windows.

    `flush` writes the latents of the updates that were taken into the replay (at the windows' trained steps) and
    stops training after `max_nonfinite` skipped updates in a row; the run of skips is counted on the device."""

    def __init__(self, device: torch.device, max_nonfinite: int, checkpoints: Path):
        self.items: list[tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]] = []
        self.skipped_run = torch.zeros((), device=device)  # consecutive skipped updates
        self.max_nonfinite, self.checkpoints = max_nonfinite, checkpoints

    def add(self, index: np.ndarray, latents: dict[str, torch.Tensor], skipped: torch.Tensor) -> None:
        """One update: its windows' replay `index` (B, T), their latents ({} without replay context), its skip flag."""
        self.skipped_run = (self.skipped_run + 1) * skipped
        self.items.append((index, latents, skipped))

    def flush(self, replay: Replay | ReplayStreams) -> None:
        if not self.items:
            return
        items, self.items = self.items, []
        for (index, latents, _), skipped in zip(items, torch.stack([s for _, _, s in items]).tolist()):
            if latents and not skipped:
                replay.update(index, host_arrays(latents))
        run = int(self.skipped_run)
        if run >= self.max_nonfinite:
            raise UserError(f"training stopped: {run} updates in a row had a non-finite loss or gradient; "
                            f"the last good checkpoint is kept in {self.checkpoints}")
