"""Runs a sans-I/O :class:`~rtc2sip.sip.transaction.TransactionLayer`'s timers on an asyncio loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..sip import TransactionLayer

log = logging.getLogger("rtc2sip.transport")


class LayerTimer:
    """One ``call_at`` handle for the layer's earliest deadline, re-armed after every event.

    ``act`` performs each action a timer produces (retransmit, time out, terminate); ``what`` names the
    owner in the log line of an unexpected error, which is logged and never stops the timers.
    """

    def __init__(self, layer: TransactionLayer, act: Callable[[Any], None], what: str) -> None:
        self.layer = layer
        self.act = act
        self.what = what
        self.loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0

    def arm(self) -> None:
        """Call after anything that may have added a timer to the layer."""
        deadline = self.layer.next_timer_deadline()
        if deadline is None:
            return
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if self._handle is not None and self._at <= deadline:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = deadline
        self._handle = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        assert self.loop is not None
        try:
            for a in self.layer.tick(self.loop.time()):
                self.act(a)
        except Exception:
            log.exception("%s: internal error in a transaction timer", self.what)
        self.arm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
