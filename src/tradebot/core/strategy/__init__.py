"""Strategies and the runner that keeps them from freezing the bot.

A strategy turns market events into :class:`~tradebot.core.models.Signal` values; it
reads what it holds from its :class:`StrategyContext` (the bot's persisted portfolio is
the one owner of positions), never from a copy of its own. The
:class:`StrategyRunner` gives every configured instance its own task and its own conflated
queue, so a slow strategy only ever sees the freshest prices and never slows the others.
Every call has its own timeout; signals reach the sink (risk gate and executor) only after
the call returned, so a timed-out or cancelled call can never leave a half-submitted order.
A strategy that keeps timing out or raising is quarantined and reported while the others
keep trading.

How a strategy is called depends on what it is:

* ``async def on_event``: awaited on the event loop, cancelled when it overruns;
* plain ``def on_event``: run on a worker thread of its own, so CPU-bound or blocking code
  cannot stall the loop. A thread cannot be killed: a timed-out call's result is discarded
  and the strategy is not called again until that call has returned;
* plain ``def on_event`` with ``blocking = False``: quick, pure computations (the built-in
  strategies) run inline on the loop, saving a thread hop per event. Such a call cannot be
  interrupted; one that overran its timeout anyway is counted as timed out and its signals
  are discarded.

Inline instances share one bus subscription and one dispatching task, which calls each of
them in turn for every event. Waking a task per instance per event cost more than a quick
strategy's whole call, and separate tasks buy such strategies nothing: an inline call holds
the loop whichever task makes it. What may wait, handing signals to the sink (which places
orders over the network) or reporting a failure, the dispatcher never does itself: it
passes that work to the instance's own task, so an order being placed for one instance
never delays another. A failure, or a second batch of signals before the first was handed
over, also *detaches* the instance: until its task has caught up, the instance's events
queue (conflated) on its own queue and its task calls it; once that queue is empty the
dispatcher calls it again. So every instance sees its events in order, one call at a time,
a failure is counted before the next call, and signals waiting for the sink stay bounded.
"""

from tradebot.core.strategy._api import (
    DURATION_BUCKETS_S,
    IN_FLIGHT_TTL_S,
    PRICE_SOURCES,
    BotPositions,
    CallMode,
    MarketEvent,
    PositionReader,
    PriceSampler,
    QuarantineCallback,
    SignalSink,
    Strategy,
    StrategyContext,
    StrategyStats,
)
from tradebot.core.strategy._handle import StrategyHandle
from tradebot.core.strategy._runner import StrategyRunner

__all__ = [
    "DURATION_BUCKETS_S",
    "IN_FLIGHT_TTL_S",
    "PRICE_SOURCES",
    "BotPositions",
    "CallMode",
    "MarketEvent",
    "PositionReader",
    "PriceSampler",
    "QuarantineCallback",
    "SignalSink",
    "Strategy",
    "StrategyContext",
    "StrategyHandle",
    "StrategyRunner",
    "StrategyStats",
]
