#!/usr/bin/env python3
"""Resident memory of `weir serve --upstream` around streams aborted by their clients:
before, after each of R rounds of N streams (each dropped at a random point: after
the head or after 1 to 3 events), and whether every lease and concurrency slot came back.

    bench/aborted_streams.py WEIR_BINARY [--streams 1000] [--rounds 3] [--concurrency 20]

Starts `weir mock-upstream` (events every 50 ms, so that a stream is still running when
its client leaves) and `weir serve --upstream` with bench/aborted_streams.yaml (one
account, the benchmark's key, a concurrency limit of 100) on free ports of 127.0.0.1,
stops both by their PIDs at the end. Only the Python standard library.
"""
import argparse
import http.client
import json
import os
import random
import subprocess
import tempfile
import threading
import time

from benchutil import free_port, metric, rss_kib, wait_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = json.dumps({"model": "MiniMax-M2", "stream": True, "max_tokens": 50,
                   "messages": [{"role": "user", "content": "hello"}]})










def one_stream(port, rng, statuses, lock):
    point = rng.randint(0, 3)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/v1/chat/completions", BODY, {
        "Authorization": "Bearer weir-bench-key", "Content-Type": "application/json",
        "x-mock-completion-tokens": "40", "x-mock-event-interval-ms": "50"})
    response = c.getresponse()
    with lock:
        statuses[response.status] = statuses.get(response.status, 0) + 1
    events = 0
    while events < point:
        line = response.fp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            events += 1
    c.sock.close()  # the client leaves mid-stream


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="weir-aborted.")
    upstream, weir = free_port(), free_port()
    mock = subprocess.Popen([options.binary, "mock-upstream", "--port", str(upstream), "--log-level", "warning"])
    server = subprocess.Popen([options.binary, "serve", "--port", str(weir), "--data", work, "--log-level", "warning",
                               "--config", os.path.join(ROOT, "bench", "aborted_streams.yaml"),
                               "--upstream", f"http://127.0.0.1:{upstream}"])
    try:
        wait_http(weir, "/healthz")
        rng = random.Random(1000)
        print(f"| moment | resident memory (KiB) | active leases | 200s |")
        print(f"| --- | --- | --- | --- |")
        print(f"| start | {rss_kib(server.pid)} | {metric(weir, 'weir_active_leases')} | |")
        for round_number in range(1, options.rounds + 1):
            statuses, lock = {}, threading.Lock()
            remaining = list(range(options.streams))

            def worker():
                local = random.Random(rng.random())
                while True:
                    with lock:
                        if not remaining:
                            return
                        remaining.pop()
                    one_stream(weir, local, statuses, lock)

            threads = [threading.Thread(target=worker) for _ in range(options.concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            end = time.time() + 30
            while metric(weir, "weir_active_leases") not in (0, 0.0) and time.time() < end:
                time.sleep(0.05)
            print(f"| after round {round_number} ({options.streams} aborted) | {rss_kib(server.pid)} | "
                  f"{metric(weir, 'weir_active_leases')} | {statuses.get(200, 0)} of {sum(statuses.values())} |")
    finally:
        for process in (server, mock):
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
