"""End-to-end detection and healing times from the chaos drill (``tradebot drill``).

    /tmp/venv/bin/python bench/bench_drill.py [--scenario all]

Runs the drill scenarios with their default settings and prints, per scenario, the time
from fault to detection, from the end of the fault to healthy ACTIVE trading (for the
process kill: from the restart to the first order), the orders placed and the duplicates
and lost orders counted on the simulator.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tradebot.core import loop as event_loop
from tradebot.drill import render_reports, run_drill


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL + 1)  # the table is the output
    reports = event_loop.run(run_drill(args.scenario or ["all"]))
    print(render_reports(reports))
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
