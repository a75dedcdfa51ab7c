"""What a training log line holds: the updates' metrics and the episodes that ended since the previous line."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

PER_ENV_LIMIT = 16  # with more envs than this, a line gives the spread of returns instead of one per env


def mean_metrics(values: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """The mean of each metric's device tensors, read back in one transfer."""
    if not values:
        return {}
    means = torch.stack([torch.stack(v).float().mean() for v in values.values()]).tolist()
    return dict(zip(values, means))


class Tally:
    """Collects between log lines; the update metrics stay on the device until the line is written."""

    def __init__(self, num_envs: int):
        self.num_envs = num_envs
        self.metrics: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.returns: list[float] = []
        self.per_env: dict[int, list[float]] = defaultdict(list)
        self.last_return: float | None = None  # of the latest episode to end, for the progress bar

    def add_metrics(self, metrics: dict[str, list[torch.Tensor]]) -> None:
        for key, values in metrics.items():
            self.metrics[key].extend(values)

    def add_episodes(self, ended: list[dict[str, float]]) -> None:
        for episode in ended:
            self.returns.append(episode["return"])
            self.per_env[int(episode["env"])].append(episode["return"])
            self.last_return = episode["return"]

    def line(self) -> dict[str, float]:
        """The metrics' means and the episodes' returns (per env with a few envs, their spread with many); then empty."""
        line = mean_metrics(self.metrics)
        returns = self.returns
        if returns:
            line.update({"episode/return": float(np.mean(returns)), "episode/count": len(returns)})
            if self.num_envs > 1:
                line.update({"episode/return_min": min(returns), "episode/return_max": max(returns)})
                if self.num_envs <= PER_ENV_LIMIT:
                    line.update({f"episode/return_env{i}": float(np.mean(r)) for i, r in sorted(self.per_env.items())})
        self.metrics.clear()
        self.returns.clear()
        self.per_env.clear()
        return line
