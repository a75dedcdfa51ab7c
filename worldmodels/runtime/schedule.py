"""When something periodic is due: every N env steps, from the step a run starts or resumes at."""

from __future__ import annotations


class Every:
    """Due at the first step at or past the next multiple of `every`; `every=0` never (before the end, `total`)."""

    def __init__(self, every: int, total: int, step: int):
        self.every, self.total = every, total
        self.restart(step)

    def due(self, step: int) -> bool:
        return step >= self.next

    def restart(self, step: int) -> None:
        """Count the next interval from `step` (called when it was due and done)."""
        self.next = (step // self.every + 1) * self.every if self.every else self.total + 1
