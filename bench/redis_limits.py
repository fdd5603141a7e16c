#!/usr/bin/env python3
"""The Python `limits` library with its Redis storage, as a baseline for bench/redis.sh.

    python3 bench/redis_limits.py --port 6379 --strategy moving-window \
        [--concurrency 64] [--processes 4] [--seconds 10] [--accounts 1000]

`concurrency` callers in all: `processes` processes of concurrency/processes threads,
each calling `limiter.hit(item, account, scope)` (one decision) in a loop until the time
is up (at most 10 million calls per caller), on accounts drawn at random; 6,000 requests
per minute per account (no call is denied at these rates). Prints one line:
`decisions/s errors`.
"""
import argparse
import multiprocessing
import random
import threading
import time


def worker(port, strategy, seconds, threads, accounts, warmup, results):
    from limits import RateLimitItemPerMinute, storage, strategies

    backend = storage.RedisStorage(f"redis://127.0.0.1:{port}")
    kind = {
        "moving-window": strategies.MovingWindowRateLimiter,
        "fixed-window": strategies.FixedWindowRateLimiter,
        "sliding-window": getattr(strategies, "SlidingWindowCounterRateLimiter", None),
    }[strategy]
    limiter = kind(backend)
    item = RateLimitItemPerMinute(6000)
    counts = [0] * threads
    errors = [0] * threads
    start = time.monotonic() + warmup
    deadline = start + seconds

    def loop(index):
        rng = random.Random(index)
        for _ in range(10_000_000):
            now = time.monotonic()
            if now >= deadline:
                break
            try:
                limiter.hit(item, f"acct{rng.randrange(accounts)}", "chat")
                if now >= start:
                    counts[index] += 1
            except Exception:
                errors[index] += 1

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    results.put((sum(counts), sum(errors)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--strategy", default="moving-window")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--accounts", type=int, default=1000)
    arguments = parser.parse_args()
    processes = max(1, min(arguments.processes, arguments.concurrency))
    threads = arguments.concurrency // processes
    results = multiprocessing.Queue()
    pool = [
        multiprocessing.Process(
            target=worker,
            args=(arguments.port, arguments.strategy, arguments.seconds, threads, arguments.accounts,
                  arguments.warmup, results),
        )
        for _ in range(processes)
    ]
    for process in pool:
        process.start()
    totals = [results.get(timeout=arguments.seconds + arguments.warmup + 120) for _ in pool]
    for process in pool:
        process.join()
    decisions = sum(t[0] for t in totals)
    errors = sum(t[1] for t in totals)
    print(f"{decisions / arguments.seconds:.1f} {errors}")


if __name__ == "__main__":
    main()
