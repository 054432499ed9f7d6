"""The one retry/poll policy (core/api/retry.py), on a fake clock: no test here waits."""

from __future__ import annotations

import pytest
from orchestrate.core.api.retry import Retry


class FakeClock:
    """A clock that moves only when `sleep` is called, recording every wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def policy(clock: FakeClock, **kwargs: float | int | None) -> Retry:
    return Retry(sleep=clock.sleep, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_waits_grow_by_the_factor_up_to_the_cap() -> None:
    retry = Retry(first_s=0.5, max_s=5.0, factor=2.0, attempts=7)
    assert list(retry.delays()) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert retry.wait_after(0) == 0.0


def test_call_retries_what_retry_if_accepts_until_it_works() -> None:
    clock = FakeClock()
    results = iter([OSError("refused"), OSError("reset"), "ok"])

    def flaky() -> str:
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    heard: list[tuple[int, str]] = []
    got = policy(clock, deadline_s=60).call(
        flaky,
        retry_if=lambda e: isinstance(e, OSError),
        on_retry=lambda n, _s, exc, _d: heard.append((n, str(exc))),
    )
    assert got == "ok"
    assert clock.waits == [0.5, 1.0]
    assert heard == [(1, "refused"), (2, "reset")]


def test_call_gives_up_before_a_wait_would_end_past_the_deadline() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def down() -> None:
        calls.append(clock.now)
        raise OSError("refused")

    with pytest.raises(OSError, match="refused"):
        policy(clock, deadline_s=4.0, first_s=1.0, max_s=10.0).call(down, retry_if=lambda e: True)
    assert calls == [0.0, 1.0, 3.0]  # a fourth try would start at 7 s, past 4 s
    assert clock.now <= 4.0


def test_call_stops_after_the_attempts() -> None:
    clock = FakeClock()
    tries: list[int] = []

    def down() -> None:
        tries.append(1)
        raise OSError("refused")

    with pytest.raises(OSError):
        policy(clock, attempts=3).call(down, retry_if=lambda e: True)
    assert len(tries) == 3


def test_call_passes_a_failure_retry_if_refuses_at_once() -> None:
    clock = FakeClock()

    def wrong() -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        policy(clock, deadline_s=60).call(wrong, retry_if=lambda e: isinstance(e, OSError))
    assert clock.waits == []


def test_on_retry_may_stop_for_a_reason_of_its_own() -> None:
    clock = FakeClock()

    def refused() -> None:
        raise OSError("key refused")

    def stop(n: int, _s: float, exc: Exception, _d: float) -> None:
        if n == 2:
            raise RuntimeError(f"giving up: {exc}")

    with pytest.raises(RuntimeError, match="giving up: key refused"):
        policy(clock, deadline_s=60).call(refused, retry_if=lambda e: True, on_retry=stop)
    assert clock.waits == [0.5]


def test_poll_returns_the_value_once_done() -> None:
    clock = FakeClock()
    states = iter(["pending", "pending", "running"])
    value, done = policy(clock, deadline_s=60).poll(lambda: next(states), lambda s: s == "running")
    assert (value, done) == ("running", True)
    assert clock.waits == [0.5, 1.0]


def test_poll_times_out_with_the_last_value() -> None:
    clock = FakeClock()
    value, done = policy(clock, deadline_s=3.0).poll(lambda: "pending", lambda s: False)
    assert (value, done) == ("pending", False)
    # reads at 0, 0.5, 1.5 and 3.5 s: the last one past the deadline ends the wait
    assert clock.waits == [0.5, 1.0, 2.0]


def test_poll_lets_done_end_the_wait_with_an_error() -> None:
    clock = FakeClock()

    def done(state: str) -> bool:
        if state == "terminated":
            raise LookupError("gone")
        return False

    with pytest.raises(LookupError):
        policy(clock, deadline_s=60).poll(lambda: "terminated", done)
