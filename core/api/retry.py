"""One way to retry and to poll: a deadline, a first delay, a cap and a growth factor.

Every wait in orchestrate has the same shape, in the spirit of libcloud's ``Retry``: try at
once, then wait ``first_s``, growing by ``factor`` up to ``max_s``, and stop before a wait
would end past the deadline (or after ``attempts`` tries). Written once here so a fix (the
deadline check, an injectable clock) reaches every caller: SSH connect, instance settle, the
tunnel's reconnects, the providers' API retries and their waits for an instance.

It lives in ``api``, the lowest layer, because provider plugins use it too and plugins may
import only ``orchestrate.core.api``. ``sleep`` and ``clock`` are injectable so tests and
fakes wait for nothing; ``sleep`` may be an ``Event.wait`` (a closing tunnel cuts a wait short).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

#: on_retry(attempt number from 1, seconds since the first try, the exception, next delay)
OnRetry = Callable[[int, float, Exception, float], None]


@dataclass(frozen=True)
class Retry:
    """Delays between tries and when to stop. Without a deadline or attempts it never stops."""

    deadline_s: float | None = None
    first_s: float = 0.5
    max_s: float = 5.0
    factor: float = 2.0
    attempts: int | None = None
    sleep: Callable[[float], object] = field(default=time.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def wait_after(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed try (1-based)."""
        if failures <= 0:
            return 0.0
        return float(min(self.max_s, self.first_s * self.factor ** (failures - 1)))

    def delays(self) -> Iterator[float]:
        """The waits between tries, in order, ending when ``attempts`` tries were made."""
        failures = 0
        while self.attempts is None or failures + 1 < self.attempts:
            failures += 1
            yield self.wait_after(failures)

    def _stops(self, failures: int, started: float, delay: float) -> bool:
        """True when another try would exceed ``attempts`` or begin past the deadline."""
        if self.attempts is not None and failures >= self.attempts:
            return True
        return self.deadline_s is not None and self.clock() - started + delay > self.deadline_s

    def call(
        self,
        fn: Callable[[], T],
        *,
        retry_if: Callable[[Exception], bool],
        on_retry: OnRetry | None = None,
    ) -> T:
        """``fn()``'s result; a failure ``retry_if`` accepts is tried again after a wait.

        The last failure propagates unchanged when the policy stops (the caller knows what
        the failure means and says so); one ``retry_if`` refuses propagates at once.
        ``on_retry`` may raise to stop early for a reason of its own.
        """
        started = self.clock()
        failures = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                failures += 1
                delay = self.wait_after(failures)
                if not retry_if(exc) or self._stops(failures, started, delay):
                    raise
                if on_retry is not None:
                    on_retry(failures, self.clock() - started, exc, delay)
            self.sleep(delay)

    def poll(self, read: Callable[[], T], done: Callable[[T], bool]) -> tuple[T, bool]:
        """Read until ``done(value)``; the last value and whether it was done in time.

        The first read is immediate. ``done`` may raise to end the wait with an error (an
        instance that will never get there). Timing out is not an error here: the caller
        names what it waited for, or (a cloud wait) takes the last value as it is.
        """
        started = self.clock()
        failures = 0
        while True:
            value = read()
            if done(value):
                return value, True
            failures += 1
            delay = self.wait_after(failures)
            if self._stops(failures, started, 0.0):
                return value, False
            self.sleep(delay)
