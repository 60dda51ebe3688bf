"""``dns``: forget cached DNS answers, wait with backoff, resolve the exchange host again.

Applies to :class:`~tradebot.core.errors.DNSError` only. Recovery resolves the failing host
(the error's ``host``, else the exchange's configured URL) with ``loop.getaddrinfo``; it
succeeds once the name resolves and a cheap exchange call works.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs

from tradebot.api import ActionBase, ComponentSpec, DNSError, Failure, RecoveryLimits, ge, gt, hookimpl

__all__ = ["DnsAction", "DnsConfig", "exchange_host", "tradebot_register_recovery_actions"]

log = logging.getLogger("tradebot.healing.dns")


@attrs.frozen
class DnsConfig(RecoveryLimits):
    """``[recovery.dns]``: how long to keep trying to resolve the host."""

    resolve_attempts: int = attrs.field(default=5, validator=gt(0))
    backoff_initial_s: float = attrs.field(default=0.5, validator=ge(0))
    backoff_max_s: float = attrs.field(default=15.0, validator=ge(0))
    resolve_timeout_s: float = attrs.field(default=5.0, validator=gt(0))


def exchange_host(exchange: Any) -> str | None:
    """The host name of the exchange's REST URL (None if it has none)."""
    config = getattr(exchange, "config", None)
    url = getattr(config, "base_url", None)
    return urlsplit(url).hostname if isinstance(url, str) else None


class DnsAction(ActionBase):
    """Flushes the resolver cache and waits until the exchange host resolves again."""

    name = "dns"
    limits: DnsConfig

    def __init__(self, config: DnsConfig | None, context: Any) -> None:
        super().__init__(config or DnsConfig(), context)
        self.last_addresses: list[str] = []

    def applies_to(self, failure: Failure) -> bool:
        return failure.caused_by(DNSError) and self._host(failure) is not None

    def _host(self, failure: Failure) -> str | None:
        host = failure.context.get("host")
        return host if isinstance(host, str) and host else exchange_host(self.exchange)

    async def recover(self, failure: Failure) -> bool:
        host = self._host(failure)
        assert host is not None
        flush = getattr(self.exchange, "flush_dns", None)
        if flush is not None:
            flush()
        loop = asyncio.get_running_loop()
        cfg = self.limits
        delay = cfg.backoff_initial_s
        for attempt in range(1, cfg.resolve_attempts + 1):
            try:
                async with asyncio.timeout(cfg.resolve_timeout_s):  # not wait_for: it can lose a cancel
                    infos = await loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
            except (OSError, TimeoutError) as exc:
                log.warning(
                    "dns: %s does not resolve (attempt %d of %d): %s",
                    host,
                    attempt,
                    cfg.resolve_attempts,
                    exc,
                )
            else:
                self.last_addresses = sorted({str(info[4][0]) for info in infos})
                log.info("dns: %s resolves again to %s", host, ", ".join(self.last_addresses))
                if flush is not None:
                    flush()  # the session must not keep an older negative answer
                return True
            if attempt < cfg.resolve_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, cfg.backoff_max_s)
        return False


def create(config: DnsConfig | None, context: Any) -> DnsAction:
    return DnsAction(config, context)


@hookimpl
def tradebot_register_recovery_actions() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="dns",
            factory=create,
            config_cls=DnsConfig,
            description="flush the DNS cache, wait with backoff and resolve the exchange host again",
        )
    ]
