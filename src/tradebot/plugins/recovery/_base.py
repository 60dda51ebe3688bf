"""Old home of the recovery actions' base class; it is public now: import it from :mod:`tradebot.api`."""

from tradebot.api import ActionBase, probe_exchange

__all__ = ["ActionBase", "probe_exchange"]
