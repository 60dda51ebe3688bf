"""Client order ids that say which bot placed an order.

Every order a bot sends carries a client order id in UUID form whose first group is a tag
derived from the bot's id (``[bot] id`` in the config, else ``[bot] name``). The tag lives
in the config, not only in the state database, so a bot whose state was lost can still
recognise its own orders (open, closed, filled) on the exchange and rebuild its journal.
Two bots trading one account need different ids.
"""

from __future__ import annotations

import hashlib
import uuid

__all__ = ["OrderIds"]


class OrderIds:
    """Makes and recognises the client order ids of one bot."""

    def __init__(self, bot_id: str) -> None:
        if not bot_id:
            raise ValueError("a bot id must not be empty")
        self.bot_id = bot_id
        self.tag = hashlib.sha256(bot_id.encode()).hexdigest()[:8]
        self.prefix = f"{self.tag}-"

    def __repr__(self) -> str:
        return f"OrderIds({self.bot_id!r}, prefix={self.prefix!r})"

    def new(self) -> str:
        """A fresh client order id of this bot (a valid UUID: Kraken accepts it as ``cl_ord_id``)."""
        return self.prefix + str(uuid.uuid4())[9:]

    def is_ours(self, client_order_id: str | None) -> bool:
        """Whether an order with this client id was placed by this bot."""
        return bool(client_order_id) and client_order_id.startswith(self.prefix)  # type: ignore[union-attr]
