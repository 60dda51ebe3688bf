"""The assets and pairs the simulated exchange lists, with Kraken's legacy codes."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import attrs

__all__ = ["PAIR_STATUSES", "AssetInfo", "Catalog", "PairInfo", "default_catalog"]

PAIR_STATUSES = ("online", "cancel_only", "post_only", "limit_only", "reduce_only", "delisted")
"""A pair's status in ``AssetPairs`` (Kraken's), and ``delisted`` (no longer listed)."""


@attrs.frozen
class AssetInfo:
    """One asset: common code (``BTC``), Kraken REST code (``XXBT``) and altname (``XBT``)."""

    code: str
    kraken: str
    altname: str
    decimals: int
    display_decimals: int


@attrs.frozen
class PairInfo:
    """One spot pair with Kraken's three spellings and its trading rules.

    ``start_price`` seeds the simulated price path; ``trade_size`` is the mean size of the
    simulated market trades that make up volume.
    """

    key: str  # XXBTZUSD
    altname: str  # XBTUSD
    wsname: str  # BTC/USD
    base: AssetInfo
    quote: AssetInfo
    pair_decimals: int
    lot_decimals: int
    ordermin: Decimal
    costmin: Decimal
    tick_size: Decimal
    start_price: Decimal
    trade_size: Decimal


class Catalog:
    """Looks pairs up by any of Kraken's names and assets by any of their codes."""

    def __init__(self, assets: Iterable[AssetInfo], pairs: Iterable[PairInfo]) -> None:
        self.assets: dict[str, AssetInfo] = {a.code: a for a in assets}
        self.pairs: dict[str, PairInfo] = {p.key: p for p in pairs}
        self.statuses: dict[str, str] = {}  # pair key -> AssetPairs status, when not "online"
        self._pair_names: dict[str, PairInfo] = {}
        for pair in self.pairs.values():
            for name in (pair.key, pair.altname, pair.wsname):
                self._pair_names[name.upper()] = pair
        self._asset_names: dict[str, AssetInfo] = {}
        for asset in self.assets.values():
            for name in (asset.code, asset.kraken, asset.altname):
                self._asset_names[name.upper()] = asset

    def pair(self, name: str) -> PairInfo | None:
        """The pair called ``name`` (``XXBTZUSD``, ``XBTUSD`` or ``BTC/USD``), or None."""
        return self._pair_names.get(name.strip().upper())

    def pair_by_wsname(self, wsname: str) -> PairInfo | None:
        """WebSocket v2 accepts only ``BASE/QUOTE`` symbols."""
        pair = self._pair_names.get(wsname.upper())
        return pair if pair is not None and pair.wsname == wsname else None

    def status(self, pair: PairInfo) -> str:
        """The pair's ``AssetPairs`` status: ``online`` unless :meth:`set_status` changed it."""
        return self.statuses.get(pair.key, "online")

    def set_status(self, name: str, status: str) -> None:
        """Change a pair's status (one of :data:`PAIR_STATUSES`), as Kraken does in
        maintenance or before delisting. AddOrder then refuses what the status forbids; a
        ``delisted`` pair leaves ``AssetPairs`` and orders for it are an unknown pair."""
        pair = self.pair(name)
        if pair is None:
            raise KeyError(f"unknown pair {name!r}")
        if status not in PAIR_STATUSES:
            raise ValueError(f"unknown pair status {status!r} (one of {', '.join(PAIR_STATUSES)})")
        if status == "online":
            self.statuses.pop(pair.key, None)
        else:
            self.statuses[pair.key] = status

    def asset(self, name: str) -> AssetInfo | None:
        """The asset called ``name`` (``BTC``, ``XXBT`` or ``XBT``), or None."""
        return self._asset_names.get(name.strip().upper())


def default_catalog() -> Catalog:
    """BTC/USD, ETH/USD, SOL/USD, BTC/EUR, DOGE/USD and SHIB/USD with Kraken's codes and
    (approximate) rules: prices with 1 (BTC) to 8 (SHIB) decimals, volumes with 8 to 1."""
    btc = AssetInfo("BTC", "XXBT", "XBT", 10, 5)
    eth = AssetInfo("ETH", "XETH", "ETH", 10, 5)
    sol = AssetInfo("SOL", "SOL", "SOL", 10, 5)
    usd = AssetInfo("USD", "ZUSD", "USD", 4, 2)
    eur = AssetInfo("EUR", "ZEUR", "EUR", 4, 2)
    doge = AssetInfo("DOGE", "XXDG", "XDG", 8, 2)
    shib = AssetInfo("SHIB", "SHIB", "SHIB", 5, 0)
    pairs = [
        PairInfo(
            "XXBTZUSD",
            "XBTUSD",
            "BTC/USD",
            btc,
            usd,
            1,
            8,
            Decimal("0.00005"),
            Decimal("0.5"),
            Decimal("0.1"),
            Decimal("60000"),
            Decimal("0.05"),
        ),
        PairInfo(
            "XETHZUSD",
            "ETHUSD",
            "ETH/USD",
            eth,
            usd,
            2,
            8,
            Decimal("0.002"),
            Decimal("0.5"),
            Decimal("0.01"),
            Decimal("3000"),
            Decimal("0.8"),
        ),
        PairInfo(
            "SOLUSD",
            "SOLUSD",
            "SOL/USD",
            sol,
            usd,
            2,
            8,
            Decimal("0.02"),
            Decimal("0.5"),
            Decimal("0.01"),
            Decimal("150"),
            Decimal("10"),
        ),
        PairInfo(
            "XXBTZEUR",
            "XBTEUR",
            "BTC/EUR",
            btc,
            eur,
            1,
            8,
            Decimal("0.00005"),
            Decimal("0.5"),
            Decimal("0.1"),
            Decimal("55000"),
            Decimal("0.03"),
        ),
        PairInfo(
            "XDGUSD",
            "XDGUSD",
            "DOGE/USD",
            doge,
            usd,
            7,
            8,
            Decimal("50"),
            Decimal("0.5"),
            Decimal("0.0000001"),
            Decimal("0.15"),
            Decimal("2000"),
        ),
        PairInfo(
            "SHIBUSD",
            "SHIBUSD",
            "SHIB/USD",
            shib,
            usd,
            8,
            1,
            Decimal("200000"),
            Decimal("0.5"),
            Decimal("0.00000001"),
            Decimal("0.00002"),
            Decimal("20000000"),
        ),
    ]
    return Catalog([btc, eth, sol, usd, eur, doge, shib], pairs)
