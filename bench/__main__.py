"""`python -m bench`: run the benchmarks, print one table, write a JSON file of results.

Sizes are flags; the defaults finish in a few minutes on 2 cores. `--tiny` is the
smoke test CI runs: every figure once, at sizes too small to mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench import figures
from bench.figures import Figure

ALL = ("command", "latency", "claim", "lag", "replay", "http", "memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--only", nargs="*", choices=ALL, default=list(ALL))
    parser.add_argument("--commands", type=int, default=3000, help="AddTarget RPCs per run")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--batches", type=int, default=5, help="AddTargets of 1,000 per run")
    parser.add_argument("--big", type=int, default=20_000, help="targets of the big outdial")
    parser.add_argument("--samples", type=int, default=200, help="latency samples")
    parser.add_argument(
        "--claim-targets", type=int, default=10_000, help="targets of the big outdial of claims"
    )
    parser.add_argument("--events", type=int, default=50_000, help="events to replay")
    parser.add_argument(
        "--lag-rate",
        type=float,
        default=0.0,
        help="commands/s for the lag figure (default: half the AddTarget rate measured, else 250)",
    )
    parser.add_argument("--lag-commands", type=int, default=1000)
    parser.add_argument(
        "--requests", type=int, default=5000, help="HTTP requests per figure (without wrk)"
    )
    parser.add_argument("--http-seconds", type=float, default=3.0, help="seconds of each wrk load")
    parser.add_argument("--http-concurrency", type=int, nargs="+", default=[32, 256])
    parser.add_argument(
        "--http-rounds",
        type=int,
        default=3,
        help="loads of the bare handler and of the service, alternately, per figure (the best)",
    )
    parser.add_argument(
        "--http-sizes",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        help="targets of the outdial read (each size, then the cost curve between them)",
    )
    parser.add_argument(
        "--memory-events",
        type=int,
        default=200_000,
        help="events before the memory reading (the target speaks of 1,000,000: about 6 minutes)",
    )
    parser.add_argument("--json", type=Path, default=Path("var/bench-results.json"))
    parser.add_argument("--tiny", action="store_true", help="a smoke test: tiny sizes")
    args = parser.parse_args(argv)
    if args.tiny:
        args.commands, args.concurrency, args.batches, args.big = 100, 10, 1, 1000
        args.samples, args.events, args.requests, args.http_concurrency = 10, 2000, 200, [4]
        args.http_sizes, args.http_seconds, args.http_rounds = [100, 1000], 1.0, 1
        args.claim_targets, args.lag_commands, args.memory_events = 200, 50, 3000

    results: list[Figure] = []
    started = time.monotonic()
    if "command" in args.only:
        results += asyncio.run(
            figures.command_path(args.store, args.commands, args.concurrency, args.batches)
        )
    if "latency" in args.only:
        results += asyncio.run(figures.latency_by_size(args.store, args.big, args.samples))
    if "claim" in args.only:
        results += asyncio.run(figures.claim_latency(args.store, args.claim_targets, args.samples))
    if "lag" in args.only:
        rate = args.lag_rate or next(
            (f.value / 2 for f in results if f.name.startswith("AddTarget commands/s")), 250.0
        )
        results += asyncio.run(figures.read_after_write(args.store, rate, args.lag_commands))
    if "replay" in args.only:
        results += figures.replay_speed(args.store, args.events)
    if "http" in args.only:
        results += asyncio.run(
            figures.http_reads(
                args.store,
                args.http_sizes,
                args.http_concurrency,
                args.http_seconds,
                args.requests,
                args.http_rounds,
            )
        )
    if "memory" in args.only:
        results += asyncio.run(figures.memory_growth(args.store, args.memory_events))

    print(
        f"\nstore: {args.store}; {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {time.monotonic() - started:.0f} s"
    )
    print("| figure | value | baseline | ratio | target | meets |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for f in results:
        print(
            f"| {f.name} | {f.value:,.2f} {f.unit} | {f.baseline:,.2f} {f.unit} | "
            f"{f.ratio:.2f} | {f.target} | {'yes' if f.meets else 'NO'} |"
        )
    for f in results:
        if f.note:
            print(f"- {f.name}: {f.note}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"store": args.store, "tiny": args.tiny, "figures": [f.as_dict() for f in results]},
            indent=2,
        )
    )
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
