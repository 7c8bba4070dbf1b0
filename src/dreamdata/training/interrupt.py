"""Ctrl-C during training: stop at a step boundary, where a checkpoint resumes exactly.

A ``KeyboardInterrupt`` raised mid-step would leave the RNG advanced, or the optimizer stepped, without the
step being counted, so a checkpoint taken then does not continue like the uninterrupted run. Instead the
first SIGINT only raises a flag that the training loop reads between steps.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Callable, Iterator

FORCE_AFTER_S = 2.0  # a second Ctrl-C this much later stops at once (torchrun forwards a copy sooner)


@contextlib.contextmanager
def interrupt_at_step_boundary(request_stop: Callable[[], None]) -> Iterator[None]:
    """Within the block, the first SIGINT calls ``request_stop()`` instead of raising; a second one, at least
    :data:`FORCE_AFTER_S` later, raises ``KeyboardInterrupt`` at once. Outside the main thread, or when SIGINT
    is ignored (``nohup``), nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        yield
        return
    first: list[float] = []

    def handler(signum, frame):
        if not first:
            first.append(time.monotonic())
            request_stop()
        elif time.monotonic() - first[0] > FORCE_AFTER_S:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
