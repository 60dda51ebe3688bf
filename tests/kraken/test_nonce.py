"""Nonces: strictly increasing under concurrency and across restarts, persisted atomically."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import pytest

from tradebot.core.errors import StateError
from tradebot.exchanges.kraken.nonce import NonceSource

from .conftest import make_exchange
from .fake_kraken import FakeKraken


def test_strictly_increasing_across_threads(tmp_path: Path) -> None:
    source = NonceSource(tmp_path / "nonce", time_us=lambda: 1_000)  # a frozen clock: only the counter moves
    per_thread: list[list[int]] = [[] for _ in range(8)]

    def work(out: list[int]) -> None:
        out.extend(source.next() for _ in range(500))

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [n for out in per_thread for n in out]
    assert len(set(everything)) == 4000
    assert all(a < b for out in per_thread for a, b in itertools.pairwise(out))


def test_restart_never_reuses_a_nonce_even_if_the_clock_went_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "kraken_nonce"
    first = NonceSource(path, reserve_us=1_000_000, time_us=lambda: 5_000_000)
    issued = [first.next() for _ in range(1000)]
    # a restart whose wall clock is earlier than before
    second = NonceSource(path, reserve_us=1_000_000, time_us=lambda: 4_000_000)
    assert second.next() > max(issued)
    assert first.writes <= 2  # a block reservation, not a write per nonce
    assert not list(path.parent.glob("*.tmp"))  # atomic: no temp files left behind


def test_time_is_the_floor(tmp_path: Path) -> None:
    now = [10_000_000]
    source = NonceSource(tmp_path / "n", time_us=lambda: now[0])
    assert source.next() == 10_000_000
    now[0] = 20_000_000
    assert source.next() == 20_000_000


def test_corrupt_file_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "n"
    path.write_text("garbage")
    with pytest.raises(StateError, match="corrupt"):
        NonceSource(path)


async def test_concurrent_private_calls_and_restart_against_a_server(
    server: FakeKraken, tmp_path: Path
) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    try:
        await asyncio.gather(*(ex.rest.private("Balance") for _ in range(30)))
    finally:
        await ex.close()
    first_run = list(server.nonces)
    restarted = make_exchange(server.base_url, tmp_path)
    try:
        await restarted.rest.private("Balance")
    finally:
        await restarted.close()
    assert len(set(first_run)) == 30
    assert server.nonces[-1] > max(first_run)
    assert (tmp_path / "kraken_nonce").exists()
