"""Signals that end a training run politely, with a checkpoint of the current step."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's preemption, `kill`, a container stop) ends a run like Ctrl-C does: with a
    checkpoint of the current step. Background jobs of a shell ignore SIGINT, so it is often the only
    polite signal that reaches them. (Under torchrun, distributed.stop_on_signals takes this role.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_on_signals(request: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `request` instead of raising where the process happens to be.

    Alone, a signal raises KeyboardInterrupt and the run saves at once; under torchrun the ranks must save
    together, so each rank notes the signal and the trainer's next all-reduce tells every rank to save and
    stop at the same loop iteration (torchrun forwards a SIGTERM it gets to every rank, and gives them 30 s)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum, frame):
        request.set()

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
