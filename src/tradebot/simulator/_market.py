"""The simulated market: a seeded, reproducible price path per pair, candles and ticker stats.

Each pair follows a geometric random walk with a drift that switches sign now and then, so a
short run sees both noise and trends. The path is a function of the seed and the number of
ticks taken only, never of wall time, so two simulators with the same seed stepped the same
number of times quote the same prices.
"""

from __future__ import annotations

import functools
import math
import random
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs

from tradebot.simulator._catalog import Catalog, PairInfo
from tradebot.simulator._protocol import quantize

__all__ = ["OHLC_INTERVALS", "CandleBar", "Market", "MarketTrade", "PairMarket", "TickerStats"]

OHLC_INTERVALS: tuple[int, ...] = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
MAX_CANDLES = 720
TAPE_LENGTH = 1000  # public trades and spreads kept per pair (Kraken's Trades answers at most 1000)
_SPREAD = 0.00005  # bid/ask each half a basis point from the mid


@attrs.define
class CandleBar:
    """One OHLC bar being built or already closed."""

    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    count: int = 0

    @property
    def vwap(self) -> Decimal:
        return self.notional / self.volume if self.volume else self.close

    def add(self, price: Decimal, volume: Decimal) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += volume
        self.notional += price * volume
        self.count += 1


@attrs.frozen
class MarketTrade:
    """One public trade on a pair's tape (simulated market flow or the account's own fills)."""

    trade_id: int
    time: float
    price: Decimal
    qty: Decimal
    side: str  # "buy" | "sell": the taker's side
    ordertype: str  # "market" | "limit"


@attrs.frozen
class TickerStats:
    """What Ticker (REST) and the ticker channel (WS) report for one pair."""

    pair: PairInfo
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    last: Decimal
    last_qty: Decimal
    volume_today: Decimal
    volume_24h: Decimal
    vwap_today: Decimal
    vwap_24h: Decimal
    trades_today: int
    trades_24h: int
    low_today: Decimal
    low_24h: Decimal
    high_today: Decimal
    high_24h: Decimal
    open_today: Decimal
    open_24h: Decimal
    time: datetime

    @property
    def change_24h(self) -> Decimal:
        return self.last - self.open_24h

    @property
    def change_pct_24h(self) -> Decimal:
        return (self.change_24h / self.open_24h * 100) if self.open_24h else Decimal(0)


def _on_tick(value: float, tick: Decimal) -> Decimal:
    return Decimal(round(value / float(tick))) * tick


@functools.lru_cache(maxsize=256)
def _history(seed: int, pair: PairInfo, interval: int, current_open: int) -> tuple[tuple[Any, ...], ...]:
    """720 plausible bars ending at the start price (history is quieter than the live path).

    Cached: every simulator with the same seed started in the same minute shares them.
    """
    rng = random.Random(f"{seed}:{pair.key}:history:{interval}")
    span = interval * 60
    tick = pair.tick_size
    sigma = min(0.002 * math.sqrt(interval), 0.08)
    closes: list[float] = []
    price = float(pair.start_price)
    for _ in range(MAX_CANDLES - 1):
        closes.append(price)
        price /= math.exp(rng.gauss(0.0, sigma))
    closes.reverse()
    rows: list[tuple[Any, ...]] = []
    previous = price
    for index, close in enumerate(closes):
        open_time = current_open - span * (len(closes) - index)
        wiggle = abs(rng.gauss(0.0, sigma / 2))
        high = max(previous, close) * (1 + wiggle)
        low = min(previous, close) * (1 - wiggle)
        volume = Decimal(round(rng.uniform(50, 150) * interval * 1000)) / 1000 * pair.trade_size
        count = max(1, int(rng.uniform(50, 150) * interval))
        typical = _on_tick((high + low + close) / 3, tick)
        rows.append(
            (
                open_time,
                _on_tick(previous, tick),
                _on_tick(high, tick),
                _on_tick(low, tick),
                _on_tick(close, tick),
                volume,
                volume * typical,
                count,
            )
        )
        previous = close
    start = _on_tick(float(pair.start_price), tick)
    rows.append((current_open, start, start, start, start, Decimal(0), Decimal(0), 0))
    return tuple(rows)


class PairMarket:
    """Price, candles and last trade of one pair."""

    def __init__(self, pair: PairInfo, seed: int, now: datetime, *, volatility: float, trend: float) -> None:
        self.pair = pair
        self._rng = random.Random(f"{seed}:{pair.key}")
        self._volatility = volatility
        self._trend = trend
        self._drift = trend if self._rng.random() < 0.5 else -trend
        self._mid = float(pair.start_price)
        self.ticks = 0
        self.last = self._price(self._mid)
        self.last_qty = pair.trade_size
        self.bid_qty = Decimal(1)
        self.ask_qty = Decimal(1)
        self.candles: dict[int, deque[CandleBar]] = {}
        self.trades: deque[MarketTrade] = deque(maxlen=TAPE_LENGTH)
        self.spreads: deque[tuple[float, Decimal, Decimal]] = deque(maxlen=TAPE_LENGTH)
        self._trade_ids = 0
        self._stats_cache: tuple[tuple[int, int], TickerStats] | None = None
        for interval in OHLC_INTERVALS:
            span = interval * 60
            current_open = int(now.timestamp()) // span * span
            rows = _history(seed, pair, interval, current_open)
            self.candles[interval] = deque((CandleBar(*row) for row in rows), maxlen=MAX_CANDLES)

    # --- prices ---------------------------------------------------------------

    def _price(self, value: float) -> Decimal:
        return _on_tick(value, self.pair.tick_size)

    @property
    def bid(self) -> Decimal:
        return min(self._price(self._mid * (1 - _SPREAD)), self.ask - self.pair.tick_size)

    @property
    def ask(self) -> Decimal:
        return self._price(self._mid * (1 + _SPREAD)) + self.pair.tick_size

    def step(self, now: datetime) -> None:
        """Move the price one tick and record one simulated market trade."""
        rng = self._rng
        if rng.random() < 0.02:  # a trend change every ~50 ticks on average
            self._drift = -self._drift if rng.random() < 0.7 else 0.0
            if self._drift == 0.0:
                self._drift = self._trend if rng.random() < 0.5 else -self._trend
        shock = rng.gauss(0.0, self._volatility)
        self._mid *= math.exp(self._drift + shock - self._volatility**2 / 2)
        self.ticks += 1
        buy = rng.random() < 0.5
        qty = Decimal(repr(rng.expovariate(1.0))) * self.pair.trade_size
        qty = max(quantize(qty, self.pair.lot_decimals), self.pair.ordermin)
        self.last = self.ask if buy else self.bid
        self.last_qty = qty
        self.bid_qty = quantize(Decimal(repr(rng.uniform(0.2, 3.0))) * self.pair.trade_size * 10, 3)
        self.ask_qty = quantize(Decimal(repr(rng.uniform(0.2, 3.0))) * self.pair.trade_size * 10, 3)
        self._record(now, self.last, qty)
        self.add_trade(now, self.last, qty, "buy" if buy else "sell", "market")
        self.spreads.append((now.timestamp(), self.bid, self.ask))

    def add_trade(
        self, now: datetime, price: Decimal, qty: Decimal, side: str, ordertype: str
    ) -> MarketTrade:
        """Put one trade on the public tape (the account's fills call this too)."""
        self._trade_ids += 1
        trade = MarketTrade(self._trade_ids, now.timestamp(), price, qty, side, ordertype)
        self.trades.append(trade)
        return trade

    def depth(self, count: int) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """The simulated order book: ``count`` ask levels (best first) and ``count`` bid levels.

        A function of the price and the tick count only, so Depth, the WebSocket ``book``
        channel and order matching all see the same book.
        """
        pair = self.pair
        asks: list[tuple[Decimal, Decimal]] = []
        bids: list[tuple[Decimal, Decimal]] = []
        ask, bid = self.ask, self.bid
        for level in range(count):
            step = pair.tick_size * (level * (level + 1) // 2 + level)
            size = quantize(pair.trade_size * (3 + (level * 7919 + self.ticks) % 17), 3)
            asks.append((ask + step, size))
            if bid - step > 0:
                bids.append((bid - step, size))
        return asks, bids

    # --- candles --------------------------------------------------------------

    def _record(self, now: datetime, price: Decimal, volume: Decimal) -> None:
        ts = int(now.timestamp())
        for interval, bars in self.candles.items():
            span = interval * 60
            open_time = ts // span * span
            current = bars[-1]
            if open_time > current.open_time:
                current = CandleBar(open_time, current.close, current.close, current.close, current.close)
                bars.append(current)
            current.add(price, volume)

    def stats(self, now: datetime) -> TickerStats:
        """Bid/ask/last plus today's and the last 24 hours' volume, vwap, range and open."""
        ts = int(now.timestamp())
        key = self.version(ts)
        cached = self._stats_cache
        if cached is not None and cached[0] == key:
            return attrs.evolve(cached[1], time=now)
        result = self._compute_stats(now, ts, self.candles[15])
        self._stats_cache = (key, result)
        return result

    def version(self, ts: int) -> tuple[int, int]:
        """What every figure of :meth:`stats` depends on: the second, and the ticks taken.

        Prices, quantities and candles change only in :meth:`step`, and the today/24h windows
        only when the second changes, so two requests with the same version get the same
        figures (each stamped with its own time). Renderers key their caches on it too.
        """
        return (ts, self.ticks)

    def _compute_stats(self, now: datetime, ts: int, bars: deque[CandleBar]) -> TickerStats:
        midnight = ts // 86400 * 86400
        today = [b for b in bars if b.open_time >= midnight]
        day = [b for b in bars if b.open_time >= ts - 86400] or [bars[-1]]
        today = today or [bars[-1]]

        def summary(window: Iterable[CandleBar]) -> tuple[Decimal, Decimal, int, Decimal, Decimal]:
            items = list(window)
            volume = sum((b.volume for b in items), Decimal(0))
            notional = sum((b.notional for b in items), Decimal(0))
            vwap = quantize(notional / volume, self.pair.pair_decimals) if volume else self.last
            return (
                volume,
                vwap,
                sum(b.count for b in items),
                min(b.low for b in items),
                max(b.high for b in items),
            )

        v_t, p_t, t_t, l_t, h_t = summary(today)
        v_d, p_d, t_d, l_d, h_d = summary(day)
        return TickerStats(
            pair=self.pair,
            bid=self.bid,
            bid_qty=self.bid_qty,
            ask=self.ask,
            ask_qty=self.ask_qty,
            last=self.last,
            last_qty=self.last_qty,
            volume_today=v_t,
            volume_24h=v_d,
            vwap_today=p_t,
            vwap_24h=p_d,
            trades_today=t_t,
            trades_24h=t_d,
            low_today=l_t,
            low_24h=l_d,
            high_today=h_t,
            high_24h=h_d,
            open_today=today[0].open,
            open_24h=day[0].open,
            time=now,
        )


class Market:
    """Every pair's :class:`PairMarket`, stepped together one tick at a time."""

    def __init__(
        self,
        catalog: Catalog,
        seed: int,
        now: datetime,
        *,
        volatility: float = 0.0006,
        trend: float = 0.00015,
    ) -> None:
        self.catalog = catalog
        self.pairs: dict[str, PairMarket] = {
            key: PairMarket(pair, seed, now.astimezone(UTC), volatility=volatility, trend=trend)
            for key, pair in catalog.pairs.items()
        }

    def step(self, now: datetime) -> None:
        for pair_market in self.pairs.values():
            pair_market.step(now)

    def __getitem__(self, key: str) -> PairMarket:
        return self.pairs[key]
