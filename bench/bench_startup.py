"""Start-up time of ``tradebot plugins list`` as a cold subprocess (target < 0.5 s).

    /tmp/venv/bin/python bench/bench_startup.py [--runs 11]

Each run is a fresh ``python -m tradebot plugins list`` process (interpreter start, entry
points discovered, every plugin module imported); the median and the worst are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "tradebot", "plugins", "list"], capture_output=True, env=env
        )
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            print(out.stderr.decode()[-2000:])
            return 1
    median = statistics.median(times)
    print(
        f"tradebot plugins list, cold subprocess: median {median * 1e3:.0f} ms, worst {max(times) * 1e3:.0f} ms "
        f"over {args.runs} runs (target < 500 ms: {'met' if median < 0.5 else 'MISSED'})"
    )
    return 0 if median < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
