"""Kraken asset and pair codes <-> tradebot's common ``BASE/QUOTE`` names.

Kraken's REST API uses legacy codes (``XXBT``, ``ZUSD``, pair ``XXBTZUSD`` with altname
``XBTUSD``); WebSocket v2 uses ``BTC/USD``. The registry starts with the common pairs and
can be extended from the ``AssetPairs`` endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from tradebot.api import BadDataError, UnknownPair

__all__ = ["ASSET_CODES", "PairInfo", "PairRegistry", "asset_from_kraken"]

# Kraken's legacy asset codes; everything not listed is already the common code.
ASSET_CODES: Mapping[str, str] = {
    "XXBT": "BTC", "XBT": "BTC", "XETH": "ETH", "XLTC": "LTC", "XXRP": "XRP", "XXLM": "XLM",
    "XETC": "ETC", "XZEC": "ZEC", "XXMR": "XMR", "XXDG": "DOGE", "XDG": "DOGE", "XREP": "REP",
    "XMLN": "MLN", "ZUSD": "USD", "ZEUR": "EUR", "ZGBP": "GBP", "ZCAD": "CAD", "ZJPY": "JPY",
    "ZAUD": "AUD",
}  # fmt: skip

_TO_KRAKEN_WS = {"XBT": "BTC", "XDG": "DOGE"}
_SPELLINGS_KEPT = 1024


def asset_from_kraken(code: str) -> str:
    """``XXBT`` -> ``BTC``; staking suffixes (``.S``, ``.F`` ...) are kept on the common code."""
    base, dot, suffix = code.partition(".")
    common = ASSET_CODES.get(base, base)
    return f"{common}{dot}{suffix}"


@attrs.frozen
class PairInfo:
    """One tradable pair under all of its names."""

    pair: str  # "BTC/USD" (tradebot and WebSocket v2)
    altname: str  # "XBTUSD" (sent in REST requests)
    rest_name: str  # "XXBTZUSD" (keys of REST responses)

    @property
    def base(self) -> str:
        return self.pair.split("/")[0]

    @property
    def quote(self) -> str:
        return self.pair.split("/")[1]


_DEFAULT_PAIRS = [
    PairInfo("BTC/USD", "XBTUSD", "XXBTZUSD"),
    PairInfo("BTC/EUR", "XBTEUR", "XXBTZEUR"),
    PairInfo("BTC/GBP", "XBTGBP", "XXBTZGBP"),
    PairInfo("ETH/USD", "ETHUSD", "XETHZUSD"),
    PairInfo("ETH/EUR", "ETHEUR", "XETHZEUR"),
    PairInfo("ETH/BTC", "ETHXBT", "XETHXXBT"),
    PairInfo("LTC/USD", "LTCUSD", "XLTCZUSD"),
    PairInfo("XRP/USD", "XRPUSD", "XXRPZUSD"),
    PairInfo("DOGE/USD", "XDGUSD", "XDGUSD"),
    PairInfo("SOL/USD", "SOLUSD", "SOLUSD"),
    PairInfo("ADA/USD", "ADAUSD", "ADAUSD"),
    PairInfo("DOT/USD", "DOTUSD", "DOTUSD"),
    PairInfo("USDT/USD", "USDTUSD", "USDTZUSD"),
    PairInfo("USDC/USD", "USDCUSD", "USDCUSD"),
]


def _normalise(pair: str) -> str:
    base, sep, quote = pair.upper().partition("/")
    if not sep:
        return pair.upper()
    return f"{_TO_KRAKEN_WS.get(base, base)}/{_TO_KRAKEN_WS.get(quote, quote)}"


class PairRegistry:
    """Looks pairs up by any of their names."""

    def __init__(self, pairs: Iterable[PairInfo] = _DEFAULT_PAIRS) -> None:
        self._by_pair: dict[str, PairInfo] = {}
        self._by_name: dict[str, PairInfo] = {}
        # pair as a caller spells it -> info: every REST call looks its pairs up, and the
        # same few spellings come back each time; emptied whenever a pair is (re)registered
        self._spelled: dict[str, PairInfo] = {}
        for info in pairs:
            self.add(info)

    def add(self, info: PairInfo) -> None:
        """Register (or replace) a pair."""
        self._by_pair[info.pair] = info
        for name in (info.pair, info.altname, info.rest_name):
            self._by_name[name.upper()] = info
        self._spelled.clear()

    def __contains__(self, pair: str) -> bool:
        return _normalise(pair) in self._by_pair

    def __len__(self) -> int:
        return len(self._by_pair)

    def info(self, pair: str) -> PairInfo:
        """The pair ``"BTC/USD"`` (``"XBT/USD"`` works too); :class:`UnknownPair` otherwise."""
        info = self._spelled.get(pair)
        if info is not None:
            return info
        info = self._by_pair.get(_normalise(pair))
        if info is None:
            raise UnknownPair(f"Kraken: pair {pair!r} is not known", pair=pair)
        if len(self._spelled) < _SPELLINGS_KEPT:  # bounded, whatever callers pass
            self._spelled[pair] = info
        return info

    def from_kraken(self, name: str) -> PairInfo | None:
        """A pair by any Kraken name (``XXBTZUSD``, ``XBTUSD``, ``BTC/USD``); None if unknown."""
        return self._by_name.get(name.upper())

    def load_asset_pairs(self, result: Any) -> int:
        """Add the pairs of an ``AssetPairs`` result. Returns how many were read."""
        if not isinstance(result, dict):
            raise BadDataError("Kraken AssetPairs: result is not an object", endpoint="public/AssetPairs")
        count = 0
        for rest_name, data in result.items():
            if not isinstance(data, dict):
                raise BadDataError(
                    f"Kraken AssetPairs: entry {rest_name!r} is not an object", endpoint="public/AssetPairs"
                )
            altname, wsname = data.get("altname"), data.get("wsname")
            if not isinstance(altname, str) or not isinstance(wsname, str) or "/" not in wsname:
                continue  # dark-pool and other pairs without a WebSocket name are not tradable here
            self.add(PairInfo(_normalise(wsname), altname, str(rest_name)))
            count += 1
        return count
