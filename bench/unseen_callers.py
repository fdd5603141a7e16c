#!/usr/bin/env python3
"""Resident memory of `weir serve` under callers it has never seen (issue 17, point 3):

  1. a warm-up (20,000 calls on 100 accounts), then the baseline;
  2. N calls with N distinct API keys that do not exist (401 each);
  3. N calls for N distinct accounts (200 each: every one is a new budget, held for
     its window);
  4. quiet, for a window and two sweeps (80 s by default): memory is read every second.

    bench/unseen_callers.py WEIR_BINARY [--count 1000000] [--store memory|redis]
                            [--algorithm sliding-window|gcra] [--quiet 90]

The distinct accounts' calls are MiniMax-M2 text calls of 1 unit with a 1 s lease (as
callers that settle; a lease costs its record until then). The rule is the built-in
catalogue's (free tier: 20 requests and 1,000,000 tokens per minute, sliding window), or
with `--algorithm gcra` the same limits per day, so that a GCRA key stays non-idle for
the whole run (at 20 per minute it would be idle again 3 s after its call).

Prints resident memory (VmRSS, KiB) at each moment and the peak of each phase (read
every 50 ms), the store's key count at the peak (`weir_memory_store_keys`), the bytes
per key held at the peak, and how far above the baseline memory is after going quiet. With `--store redis`, a redis-server of its own on a free
port holds the budgets (its `used_memory` is printed too). `weir serve` runs pinned to
core 0, wrk (Debian's package) to core 1; both are stopped by their PIDs at the end.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchutil import free_port, metric, rss_kib, wait_http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One request per call, ids counted per wrk thread (-t1: one thread, so every id is
# distinct). After COUNT answers the script writes how many were not 2xx to
# UNSEEN_DONE, and the bench stops wrk (its -d is only an upper bound: a signal cannot
# end wrk's sleeping main thread early). The ids wrap at COUNT, so the few requests
# still on the wire then repeat an id rather than add one.
WRK_SCRIPT = r"""
local count = tonumber(os.getenv("UNSEEN_COUNT"))
local template = os.getenv("UNSEEN_BODY")
local modulo = tonumber(os.getenv("UNSEEN_MODULO") or os.getenv("UNSEEN_COUNT"))
local done_path = os.getenv("UNSEEN_DONE")
local sent, answered, non2xx = 0, 0, 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  sent = sent + 1
  return wrk.format(nil, "/v1/acquire", nil, string.format(template, sent % modulo))
end
response = function(status, headers, body)
  answered = answered + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if answered == count then
    local file = io.open(done_path, "w")
    file:write(answered .. " " .. non2xx .. "\n")
    file:close()
  end
end
"""











def store_keys(port):
    """The store's key count (`weir_memory_store_keys`); 0 when unknown."""
    return int(metric(port, "weir_memory_store_keys") or 0)


GCRA_CONFIG = """
tiers:
  - name: free
    recharge_threshold: 0
rules:
  - name: text-minimax-m2
    api: text
    models: [MiniMax-M2]
    meter: tokens
    algorithm: gcra
    window: 1d
    limits:
      all: {requests: 20, tokens: 1000000}
"""


def redis_used_memory(port):
    if port is None:
        return None
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "memory"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return None


class Sampler(threading.Thread):
    """Reads the server's resident memory every 50 ms; `peak()` since the last reset."""

    def __init__(self, pid, port):
        super().__init__(daemon=True)
        self.pid, self.port, self.highest, self.keys = pid, port, 0, 0
        self.lock, self.running = threading.Lock(), True

    def run(self):
        ticks = 0
        while self.running:
            value = rss_kib(self.pid)
            keys = store_keys(self.port) if ticks % 10 == 0 else 0
            with self.lock:
                self.highest = max(self.highest, value)
                self.keys = max(self.keys, keys)
            ticks += 1
            time.sleep(0.05)

    def reset(self):
        with self.lock:
            self.highest, self.keys = rss_kib(self.pid), 0

    def peak_keys(self):
        with self.lock:
            return self.keys

    def peak(self):
        with self.lock:
            return self.highest


def run_wrk(work, port, count, body, modulo=None, connections=64):
    """COUNT calls through wrk; returns (answered, not 2xx, seconds)."""
    script, done = os.path.join(work, "unseen.lua"), os.path.join(work, "unseen.done")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    if os.path.exists(done):
        os.remove(done)
    environment = dict(os.environ, UNSEEN_COUNT=str(count), UNSEEN_BODY=body, UNSEEN_DONE=done)
    if modulo:
        environment["UNSEEN_MODULO"] = str(modulo)
    started = time.time()
    wrk = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", "-d900s", "-s", script,
                            f"http://127.0.0.1:{port}"], env=environment, stdout=subprocess.DEVNULL)
    while not os.path.exists(done) and wrk.poll() is None and time.time() - started < 900:
        time.sleep(0.05)
    elapsed = time.time() - started
    wrk.kill()
    wrk.wait()
    time.sleep(0.05)  # the file's one line is written at once; let it land
    with open(done) as f:
        answered, non2xx = (int(word) for word in f.read().split())
    return answered, non2xx, elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--algorithm", choices=["sliding-window", "gcra"], default="sliding-window")
    parser.add_argument("--quiet", type=int, default=90, help="seconds of quiet after the calls")
    options = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    work = tempfile.mkdtemp(prefix="weir-unseen.")
    port = free_port()
    processes, redis_port = [], None
    arguments = [options.binary, "serve", "--port", str(port), "--data", work, "--log-level", "warning"]
    if options.algorithm == "gcra":
        config = os.path.join(work, "gcra.yaml")
        with open(config, "w") as f:
            f.write(GCRA_CONFIG)
        arguments += ["--config", config]
    if options.store == "redis":
        redis_port = free_port()
        processes.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
        time.sleep(0.3)
        arguments += ["--store", f"redis://127.0.0.1:{redis_port}"]
    server = subprocess.Popen(["taskset", "-c", "0"] + arguments)
    processes.append(server)
    sampler = Sampler(server.pid, port)
    rows = []

    def row(moment, rss, peak="", note=""):
        rows.append((moment, rss, peak, note))
        print(f"| {moment} | {rss} | {peak} | {note} |", flush=True)

    try:
        wait_http(port, "/readyz")
        sampler.start()
        print(f"{options.store} store, {options.algorithm}, {options.count:,} calls per phase")
        print("| moment | resident memory (KiB) | peak during (KiB) | |")
        print("| --- | --- | --- | --- |")
        row("start", rss_kib(server.pid))
        warm = '{"account":"warm-%d","api":"text","model":"MiniMax-M2","units":1}'
        run_wrk(work, port, 20_000, warm, modulo=100)
        baseline = rss_kib(server.pid)
        redis_baseline = redis_used_memory(redis_port)
        row("baseline (after 20,000 calls on 100 accounts)", baseline, "", f"redis used_memory {redis_baseline:,}" if redis_port else "")

        sampler.reset()
        unknown = '{"api_key":"sk-nobody-%d","api":"text","model":"MiniMax-M2","units":1}'
        requests, non2xx, elapsed = run_wrk(work, port, options.count, unknown)
        row(f"after {requests:,} calls with unknown API keys", rss_kib(server.pid), sampler.peak(),
            f"{non2xx:,} answered 401 (non-2xx) in {elapsed:.0f} s")

        sampler.reset()
        distinct = '{"account":"caller-%d","api":"text","model":"MiniMax-M2","units":1,"lease_ttl_ms":1000}'
        requests, non2xx, elapsed = run_wrk(work, port, options.count, distinct)
        peak, keys = sampler.peak(), sampler.peak_keys()
        note = f"{non2xx:,} non-2xx, {elapsed:.0f} s; "
        if redis_port:
            # The budgets live in Redis: Weir holds none, so the cost per key is Redis's.
            used = redis_used_memory(redis_port)
            note += (f"redis used_memory {used:,} = "
                     f"{(used - redis_baseline) / requests:.0f} bytes per distinct account")
        else:
            per_key = (peak - baseline) * 1024 / max(keys, 1)
            note += f"{keys:,} keys held at most; (peak - baseline) / keys = {per_key:.0f} bytes per key"
        row(f"after {requests:,} calls for distinct accounts", rss_kib(server.pid), peak, note)

        quiet_start, back_at = time.time(), None
        while time.time() - quiet_start < options.quiet:
            time.sleep(1)
            value = rss_kib(server.pid)
            if back_at is None and value <= baseline * 1.10:
                back_at = time.time() - quiet_start
        final = rss_kib(server.pid)
        note_keys = store_keys(port)
        note = f"{(final - baseline) * 100 / baseline:+.1f}% of the baseline; within 10% after " + (
            f"{back_at:.0f} s" if back_at is not None else "never in the quiet time") + f"; {note_keys:,} keys held"
        if redis_port:
            note += f"; redis used_memory {redis_used_memory(redis_port):,}"
        row(f"after {options.quiet} s quiet", final, "", note)
    finally:
        sampler.running = False
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
