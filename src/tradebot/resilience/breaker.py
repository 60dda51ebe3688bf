"""Circuit breaker: stop calling an endpoint group that keeps failing, probe it later.

CLOSED counts the outcome of the last ``window_size`` calls; once at least ``min_calls``
are recorded and the share of failures reaches ``failure_rate`` the breaker trips to
OPEN. While OPEN every call fails at once with :class:`~tradebot.core.errors.CircuitOpen`
(no I/O, a few microseconds). After the open wait the breaker lets ``half_open_calls``
probe calls through (HALF_OPEN): all succeed -> CLOSED, one fails -> OPEN again with a
longer wait (``open_wait_s * backoff_factor ** (trips - 1)``, capped at
``open_wait_max_s``).

Only transient errors (``TradebotError.transient``) count as failures: a permanent error
such as "insufficient funds" proves the exchange is up and answering, so it counts as a
success. Cancellation and foreign exceptions count as neither.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TypeVar

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import CircuitOpen, RateLimited, TradebotError
from tradebot.core.validate import ge, gt, in_range

__all__ = [
    "BreakerConfig",
    "BreakerListener",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "CircuitBreakers",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class BreakerState(enum.StrEnum):
    """Where a circuit breaker is in its cycle."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _min_calls_fit_window(inst: BreakerConfig, attribute: attrs.Attribute[int], value: int) -> None:
    if value > inst.window_size:
        raise ValueError(f"min_calls must be <= window_size ({inst.window_size}) (got {value!r})")


@attrs.frozen
class BreakerConfig:
    """Thresholds and waits of one circuit breaker."""

    window_size: int = attrs.field(default=20, validator=gt(0))
    min_calls: int = attrs.field(default=5, validator=[gt(0), _min_calls_fit_window])
    failure_rate: float = attrs.field(default=0.5, validator=in_range(0.01, 1.0))
    half_open_calls: int = attrs.field(default=2, validator=gt(0))
    open_wait_s: float = attrs.field(default=5.0, validator=gt(0))
    open_wait_max_s: float = attrs.field(default=300.0, validator=gt(0))
    backoff_factor: float = attrs.field(default=2.0, validator=ge(1.0))


@attrs.frozen
class BreakerTransition:
    """One state change of a breaker, handed to listeners (metrics, tracing, alerts)."""

    breaker: str
    previous: BreakerState
    current: BreakerState
    reason: str
    at: float  # monotonic seconds of the breaker's clock
    open_wait_s: float | None = None  # set when entering OPEN


BreakerListener = Callable[[BreakerTransition], None]

_CLOSED = BreakerState.CLOSED  # module constant: read on every call, cheaper than the enum attribute


class CircuitBreaker:
    """A circuit breaker for one endpoint group (e.g. ``"kraken.trading"``).

    Use :meth:`call` around an awaitable factory, or :meth:`acquire` / :meth:`record`
    by hand. The clock is injectable so tests drive time explicitly.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock: Clock = clock or SystemClock()
        self._listeners: list[BreakerListener] = list(listeners)
        self._state = BreakerState.CLOSED
        self._window: deque[bool] = deque(maxlen=self.config.window_size)  # True = failure
        self._failures = 0  # failures in _window, kept as it changes (no sum over the window per call)
        self._trips = 0  # consecutive trips without a return to CLOSED
        self._open_until = 0.0
        self._permits = 0  # probe calls still allowed in HALF_OPEN
        self._probe_successes = 0
        self._generation = 0  # bumps on every transition; outcomes of older calls are dropped
        self.rejected = 0  # calls refused while open, for metrics

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self.state.value} trips={self._trips}>"

    # --- inspection ------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose wait is over reads as HALF_OPEN."""
        if self._state is BreakerState.OPEN and self._clock.monotonic() >= self._open_until:
            self._to_half_open()
        return self._state

    @property
    def trips(self) -> int:
        """Consecutive trips since the breaker last closed."""
        return self._trips

    @property
    def failure_rate(self) -> float:
        """Share of failures in the current CLOSED window (0.0 when empty)."""
        return self._failures / len(self._window) if self._window else 0.0

    def retry_after_s(self) -> float:
        """Seconds until an OPEN breaker lets a probe through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._open_until - self._clock.monotonic())

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener`` on every state change."""
        self._listeners.append(listener)

    # --- use -------------------------------------------------------------------

    def acquire(self) -> int:
        """Admit one call or raise :class:`CircuitOpen`. Returns a ticket for :meth:`record`."""
        if self._state is _CLOSED:  # the usual case; only OPEN has a wait that can run out
            return self._generation
        state = self.state
        if state is BreakerState.OPEN:
            self.rejected += 1
            remaining = self._open_until - self._clock.monotonic()
            raise CircuitOpen(
                f"circuit {self.name!r} is open after repeated failures; next probe in {remaining:.1f}s",
                breaker=self.name,
                retry_after_s=round(remaining, 3),
            )
        if state is BreakerState.HALF_OPEN:
            if self._permits <= 0:
                self.rejected += 1
                raise CircuitOpen(
                    f"circuit {self.name!r} is half-open and its probe calls are in flight",
                    breaker=self.name,
                )
            self._permits -= 1
        return self._generation

    def record(self, ticket: int, exc: BaseException | None) -> None:
        """Record the outcome of a call admitted by :meth:`acquire` (``exc`` None = success)."""
        if ticket != self._generation:
            return  # the call began before the last transition: its outcome is old news
        failed = False if exc is None else self._is_failure(exc)
        if failed is None:
            if self._state is BreakerState.HALF_OPEN:
                self._permits += 1  # hand the unused probe back
            return
        if self._state is BreakerState.HALF_OPEN:
            if failed:
                self._to_open(f"probe call failed: {type(exc).__name__}")
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.config.half_open_calls:
                    self._to_closed()
            return
        if self._state is _CLOSED:
            window = self._window
            if len(window) == window.maxlen and window[0]:
                self._failures -= 1  # the oldest outcome is about to drop out of the window
            window.append(failed)
            if failed:
                self._failures += 1
            # no failure in the window: the rate is 0 and cannot reach the (positive) threshold
            if (
                self._failures
                and len(window) >= self.config.min_calls
                and self._failures / len(window) >= self.config.failure_rate
            ):
                self._to_open(
                    f"failure rate {self.failure_rate:.0%} over the last {len(self._window)} calls"
                    f" (last: {type(exc).__name__})"
                )

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` under the breaker."""
        ticket = self.acquire()
        try:
            result = await fn()
        except BaseException as exc:
            self.record(ticket, exc)
            raise
        self.record(ticket, None)
        return result

    def reset(self) -> None:
        """Close the breaker by hand (e.g. after a recovery action fixed the cause)."""
        if self._state is not BreakerState.CLOSED:
            self._to_closed(reason="reset by hand")
        self._clear_window()

    # --- internals -------------------------------------------------------------

    def _clear_window(self) -> None:
        self._window.clear()
        self._failures = 0

    @staticmethod
    def _is_failure(exc: BaseException | None) -> bool | None:
        """True = failure, False = success, None = neither (cancelled, foreign error)."""
        if exc is None:
            return False
        if isinstance(exc, (CircuitOpen, RateLimited)):
            # a rate-limit answer is the exchange up and pacing us: the rate limiter slows down,
            # the circuit stays as it is (else a restart's burst of look-ups could cut it off)
            return None
        if isinstance(exc, TradebotError):
            return exc.transient
        return None

    def _transition(self, new: BreakerState, reason: str, open_wait: float | None = None) -> None:
        previous, self._state = self._state, new
        self._generation += 1
        event = BreakerTransition(self.name, previous, new, reason, self._clock.monotonic(), open_wait)
        log.info("circuit %s: %s -> %s (%s)", self.name, previous.value, new.value, reason)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("circuit %s: state listener %r failed", self.name, listener)

    def _to_open(self, reason: str) -> None:
        self._trips += 1
        cfg = self.config
        wait = min(cfg.open_wait_s * cfg.backoff_factor ** (self._trips - 1), cfg.open_wait_max_s)
        self._open_until = self._clock.monotonic() + wait
        self._clear_window()
        self._transition(BreakerState.OPEN, reason, wait)

    def _to_half_open(self) -> None:
        self._permits = self.config.half_open_calls
        self._probe_successes = 0
        self._transition(BreakerState.HALF_OPEN, "open wait elapsed")

    def _to_closed(self, reason: str = "probe calls succeeded") -> None:
        self._trips = 0
        self._clear_window()
        self._transition(BreakerState.CLOSED, reason)


class CircuitBreakers:
    """One breaker per endpoint group, sharing a config, a clock and listeners."""

    def __init__(
        self,
        prefix: str,
        groups: Iterable[str],
        config: BreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        listeners = list(listeners)
        self._breakers: dict[str, CircuitBreaker] = {
            group: CircuitBreaker(f"{prefix}.{group}", config, clock=clock, listeners=listeners)
            for group in groups
        }

    def __getitem__(self, group: str) -> CircuitBreaker:
        return self._breakers[group]

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self._breakers.values())

    def states(self) -> Mapping[str, BreakerState]:
        """Group -> current state."""
        return {group: b.state for group, b in self._breakers.items()}

    def add_listener(self, listener: BreakerListener) -> None:
        """Listen to every breaker of the set."""
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    def reset(self) -> None:
        """Close every breaker by hand."""
        for breaker in self._breakers.values():
            breaker.reset()
