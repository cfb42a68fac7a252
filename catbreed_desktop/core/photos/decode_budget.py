"""The memory budget all photo-decoding threads of the process share.

A decoder needs its whole image in memory, and a small file can declare a huge one: six
100-megapixel PNGs decoded side by side once took 10 GB. Each decode reserves its estimated peak
before it starts and waits while the others' reservations would push the total over the budget.
Waiters are served in arrival order, so a large photo is not starved by a stream of small ones,
and a photo larger than the whole budget still decodes: alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Enough for several ordinary photos at once, or one 100-megapixel photo (about 400 MB decoded).
DECODE_MEMORY_BUDGET = 512 * 1024 * 1024


def reservation(amount: int, capacity: int) -> int:
    """What a request reserves: never more than the whole budget, so a too-large one waits for an empty budget."""
    return max(0, min(int(amount), capacity))


def admits(in_use: int, amount: int, capacity: int) -> bool:
    """Whether a request at the head of the line goes ahead: it fits, or it is alone."""
    return not in_use or in_use + amount <= capacity


class MemoryBudget:
    """A weighted, first-come-first-served semaphore counted in bytes."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a memory budget must be at least one byte, not {capacity}")
        self.capacity = int(capacity)
        self._in_use = 0
        self._next_ticket = 0
        self._serving = 0
        self._changed = threading.Condition()

    @property
    def in_use(self) -> int:
        """Bytes reserved right now (for tests and diagnostics)."""
        with self._changed:
            return self._in_use

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn right now (for tests and diagnostics)."""
        with self._changed:
            return self._next_ticket - self._serving

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        """Reserve `amount` bytes for the duration of the block, waiting for them to be free."""
        amount = reservation(amount, self.capacity)
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving or not admits(self._in_use, amount, self.capacity):
                self._changed.wait()
            self._serving += 1
            self._in_use += amount
            self._changed.notify_all()  # the next in line may fit as well
        try:
            yield
        finally:
            with self._changed:
                self._in_use -= amount
                self._changed.notify_all()


DECODE_BUDGET = MemoryBudget(DECODE_MEMORY_BUDGET)
