"""kill -9 a real process that trades through the executor and the paper exchange, at random
moments, again and again; then check that no order was lost or placed twice and every fill
was counted exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import UTC, datetime
    from decimal import Decimal as D
    from pathlib import Path
    from tradebot.core.executor import OrderExecutor
    from tradebot.core.models import OrderRequest, OrderType, Side, Ticker
    from tradebot.core.portfolio import Portfolio
    from tradebot.core.store import StateStore
    from tradebot.exchanges.paper import PaperConfig, PaperExchange

    async def main(state: Path, mode: str) -> None:
        store = StateStore(state)
        pf = Portfolio(store, starting_cash=D(1000000))
        ex = PaperExchange(PaperConfig(starting_balances={"USD": D(1000000)}, fee_pct=D("0.26"),
                                       slippage_bps=D(5)), state_path=state / "paper.json")
        await ex.start()
        ex.on_ticker(Ticker("BTC/USD", D(100), D("100.1"), D(100), D(1), datetime.now(UTC)))
        exe = OrderExecutor(ex, store, pf, not_found_grace_s=0.0)
        report = await exe.reconcile()
        if mode == "check":
            paper = json.loads((state / "paper.json").read_text())
            print(json.dumps({
                "non_final": len(store.non_final_orders()),
                "journal": {e.client_order_id: [e.status.value, e.reason, e.last_error] for e in store.orders()},
                "paper_orders": {o["client_order_id"]: o["status"] for o in paper["orders"]},
                "paper_balances": paper["balances"],
                "position": str(pf.position("BTC/USD").volume),
                "cash": str(pf.cash),
                "fills": len(store.fills()),
                "restarts": store.get_counter("restarts"),
            }))
            return
        store.incr_counter("restarts")
        intents = [int(e.reason.split("-")[1]) for e in store.orders()]
        i = max(intents, default=-1) + 1
        print("ready", flush=True)
        while True:
            side = Side.BUY if pf.position("BTC/USD").volume == 0 else Side.SELL
            await exe.submit(OrderRequest("BTC/USD", side, OrderType.MARKET, D("0.5"), f"cid-{i}"),
                             strategy="drill", reason=f"intent-{i}")
            i += 1

    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
    """
)


def test_kill9_at_random_points_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    script = tmp_path / "drill.py"
    script.write_text(SCRIPT)
    state = tmp_path / "state"
    rng = random.Random(7)
    rounds = 12
    for _ in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(state), "trade"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    out = subprocess.run(
        [sys.executable, str(script), str(state), "check"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    journal, paper = result["journal"], result["paper_orders"]
    assert result["restarts"] == rounds
    assert result["non_final"] == 0
    assert len(journal) > rounds  # the drill really traded
    # nothing lost: every order the exchange has is journalled, with the same outcome
    assert set(paper) <= set(journal)
    for cid, status in paper.items():
        assert journal[cid][0] == status == "closed"
    # nothing placed twice or placed but forgotten: journal entries absent from the exchange were never placed
    for cid, (status, _reason, error) in journal.items():
        if cid not in paper:
            assert status == "rejected" and error.startswith("not placed"), (cid, status, error)
        assert "already used" not in error
    # one intent, one journal entry
    reasons = [reason for _s, reason, _e in journal.values()]
    assert len(reasons) == len(set(reasons))
    # every fill counted exactly once: the bot's books equal the exchange's account
    assert result["fills"] == len(paper)
    assert Decimal(result["position"]) == Decimal(result["paper_balances"].get("BTC", "0"))
    assert Decimal(result["cash"]) == Decimal(result["paper_balances"]["USD"])
