"""A bounded first-come-first-served job queue: one job runs, ``max_waiting`` wait, more are refused.

The host's job lock already keeps two generations from running at once; this queue keeps API
requests from piling up behind it (each waiting request holds a worker thread and its decoded
inputs) and serves them in arrival order.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ..errors import TalkingHeadError


class QueueFull(TalkingHeadError):
    """Too many requests are already running or waiting (HTTP 429, with Retry-After)."""

    http_status = 429


class JobQueue:
    """Tickets in arrival order; :meth:`turn` blocks until a ticket's turn comes.

    Every ticket from :meth:`reserve` must be passed to :meth:`turn` or :meth:`abandon` exactly once.
    """

    def __init__(self, max_waiting: int = 2):
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = int(max_waiting)
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._pending = 0
        self._running = False
        self._abandoned: set = set()

    def reserve(self) -> int:
        """A ticket, or QueueFull when one job runs and ``max_waiting`` already wait."""
        with self._cond:
            if self._pending >= 1 + self.max_waiting:
                raise QueueFull(f"the talking-head queue is full ({self._pending} requests running or "
                                f"waiting); try again in a minute")
            self._pending += 1
            ticket = self._next_ticket
            self._next_ticket += 1
            return ticket

    def _advance(self) -> None:
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()

    def abandon(self, ticket: int) -> None:
        """Give up a reserved ticket without running (e.g. its inputs were invalid)."""
        with self._cond:
            self._pending -= 1
            self._abandoned.add(ticket)
            self._advance()

    @contextlib.contextmanager
    def turn(self, ticket: int, cancelled=None) -> Iterator[None]:
        """Wait for ``ticket``'s turn, run the body, then let the next ticket in.

        ``cancelled``: a callable polled while waiting; when it turns true the ticket is given up and
        GenerationInterrupted raised (the body never runs)."""
        with self._cond:
            while self._serving != ticket:
                if cancelled is not None and cancelled():
                    self._pending -= 1
                    self._abandoned.add(ticket)
                    self._advance()
                    from ..errors import GenerationInterrupted
                    raise GenerationInterrupted("the job was cancelled while it waited; nothing was written")
                self._cond.wait(0.2 if cancelled is not None else None)
            self._running = True
        try:
            yield
        finally:
            with self._cond:
                self._running = False
                self._serving += 1
                self._pending -= 1
                self._advance()

    def status(self) -> dict:
        """``{"running": bool, "waiting": int, "max_waiting": int}``."""
        with self._cond:
            waiting = self._pending - (1 if self._running else 0)
            return {"running": self._running, "waiting": max(0, waiting), "max_waiting": self.max_waiting}
