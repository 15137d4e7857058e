"""Bulk enqueue against one call at a time (issue 17, target 2: >= 10x).

    python -m benchmarks.bulk [--rounds 7] [--batch 10000] [--sequential 2000] [--out F]

One process, one throwaway server, no supervisor (the jobs only wait). Each round times,
one after the other: ``--sequential`` calls of ``Client.enqueue``; one ``enqueue_many`` of
``--batch`` items; the same items in ``enqueue_many`` calls of 100; Redis is emptied after
each. Interleaving puts the three under the same machine noise; per round the ratio of
the bulk rates to that round's sequential rate, then the median and the spread over the
rounds. INFO commandstats gives the Redis side of a batch (the script's own time per
item), the rest is the caller's (checks, JSON, packing, the reply).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks.harness import RESULTS_DIR
from benchmarks.sandboxrunner_bench import make_client
from sandboxrunner.testserver import TestServer

NAME = "noop"
SMALL_BATCH = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bulk",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=10_000, help="items of the one big batch")
    p.add_argument("--sequential", type=int, default=2000, help="single calls a round")
    p.add_argument("--out", type=Path, default=None, help="where the JSON goes")
    return p.parse_args(argv)


def _rate(count: int, call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return count / (time.perf_counter() - started)


def _script_us(admin: redis.Redis) -> float:
    """Microseconds Redis spent in EVALSHA since the last CONFIG RESETSTAT."""
    stats = admin.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0))


def measure(url: str, rounds: int, batch: int, sequential: int) -> dict[str, Any]:
    client, admin = make_client(url), redis.Redis.from_url(url)
    items = [{"i": i, "tag": NAME} for i in range(batch)]
    rows: list[dict[str, float]] = []
    try:
        client.enqueue_many(NAME, items[:10])  # scripts loaded, connections made
        for _ in range(rounds):
            admin.flushall()
            one = _rate(sequential, lambda: [client.enqueue(NAME, {"i": i, "tag": NAME})
                                             for i in range(sequential)])
            admin.flushall()
            admin.config_resetstat()
            big = _rate(batch, lambda: client.enqueue_many(NAME, items))
            in_redis_us = _script_us(admin) / batch
            admin.flushall()
            small = _rate(batch, lambda: [client.enqueue_many(NAME, items[j:j + SMALL_BATCH])
                                          for j in range(0, batch, SMALL_BATCH)])
            rows.append({"sequential": one, "batch": big, "batches_of_100": small,
                         "batch_x": big / one, "batches_of_100_x": small / one,
                         "redis_us_per_item": in_redis_us,
                         "caller_us_per_item": 1e6 / big - in_redis_us})
            print(f"sequential {one:8.0f}/s  batch of {batch} {big:8.0f}/s ({big / one:4.1f}x)"
                  f"  batches of {SMALL_BATCH} {small:8.0f}/s ({small / one:4.1f}x)  Redis "
                  f"{in_redis_us:.1f} us/item")
    finally:
        admin.flushall()
        client.close()
    summary = {key: {"median": round(statistics.median(r[key] for r in rows), 2),
                     "min": round(min(r[key] for r in rows), 2),
                     "max": round(max(r[key] for r in rows), 2)} for key in rows[0]}
    return {"rounds": rows, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.disable(logging.WARNING)  # "no supervisor serves queue" once per batch
    with tempfile.TemporaryDirectory() as tmp:
        server = TestServer(Path(tmp) / "redis")
        server.start()
        try:
            result = measure(server.url, args.rounds, args.batch, args.sequential)
        finally:
            server.stop()
    for key, row in result["summary"].items():
        print(f"{key:22s} median {row['median']:>10}  ({row['min']} - {row['max']})")
    out = args.out or RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-bulk.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "batch": args.batch, "sequential": args.sequential,
                               **result}, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
