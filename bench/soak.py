#!/usr/bin/env python3
"""Soak: two `weir serve` instances on one Redis, under steady load, through faults.

    bench/soak.py WEIR_BINARY [--duration 600] [--fault-every 40] [--workers 8]

What runs (all on 127.0.0.1, free ports, stopped by their PIDs at the end):
  - redis-server with `--appendonly yes --appendfsync always`: every write it
    acknowledged is on disk before the answer, so a `kill -9` and a restart on the same
    directory keep every counter;
  - `weir mock-upstream`, the model API's stand-in;
  - instances A and B: `weir serve --store redis://... --on-store-failure deny
    --upstream mock` with bench/soak.yaml (a 10 s window: 40 requests, 6 at once).

The load (threads, each call to A or B in turn, as a round-robin balancer would):
  - decision workers: `/v1/acquire` for accounts soak-0..7 (random units, 3 s lease),
    hold 0-60 ms, then `/v1/settle` on the *other* instance;
  - gateway workers: `/v1/chat/completions` with the benchmark key (account `bench`),
    half of them streamed.

Faults, one every --fault-every seconds, in turn: Redis killed (-9) and restarted 5 s
later on the same directory; instance A killed (-9) and restarted 2 s later; SIGHUP to B
(reload); `POST /admin/v1/reload` to A.

Reported (markdown on stdout):
  - every answer by path and status; server errors other than the documented
    503 `store_unavailable` (goal: none);
  - definite over-admission (goal: none): per account, 41 admitted calls whose
    server-side moments must all lie within less than 10 s (the latest answer minus
    the earliest send < 10 s); 7 leases whose slots were surely held at one moment
    (from the acquire's answer to the settle's send, at most the lease TTL);
  - after the load stops and the lease TTL has passed: every account's concurrency in
    use (`/admin/v1/accounts/{id}/usage`; goal 0: no lease leaked). The gateway's
    leases live an hour, so its account may still hold the calls that a kill -9 cut
    (counted: calls that got no answer, other than connections refused), and no more;
  - time from Redis answering again to both instances' `/readyz` answering 200
    (polled every 50 ms; goal under 2 s), and that `/readyz` said 503 during the outage;
  - resident memory of B (never killed) after warm-up and at the end.

Every loop is bounded by --duration (and each call by a 10 s timeout). Standard
library only.
"""
import argparse
import collections
import heapq
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchutil import free_port, metric, rss_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNTS = [f"soak-{n}" for n in range(8)]
WINDOW_S, REQUESTS, CONCURRENCY, LEASE_TTL_MS = 10.0, 40, 6, 3000
ADMIN_TOKEN = "soak-admin-token"
GATEWAY_KEY = "weir-bench-key"






def http_call(port, method, path, body=None, headers=None, timeout=10):
    """One request on a fresh connection: (status, body bytes); raises OSError."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body, headers or {})
        response = c.getresponse()
        return response.status, response.read()
    finally:
        c.close()


def ready_status(port):
    try:
        return http_call(port, "GET", "/readyz", timeout=2)[0]
    except OSError:
        return None


def redis_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Instance:
    """One `weir serve` process, restartable on the same port and data directory."""

    def __init__(self, name, binary, work, redis_port, upstream_port):
        self.name, self.port = name, free_port()
        self.arguments = [binary, "serve", "--port", str(self.port),
                          "--config", os.path.join(ROOT, "bench", "soak.yaml"),
                          "--data", os.path.join(work, name),
                          "--store", f"redis://127.0.0.1:{redis_port}",
                          "--on-store-failure", "deny",
                          "--upstream", f"http://127.0.0.1:{upstream_port}",
                          "--admin-token-file", os.path.join(work, "admin-token"),
                          "--log-level", "error"]
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(self.arguments)

    def wait_ready(self, deadline=30):
        end = time.time() + deadline
        while time.time() < end:
            if ready_status(self.port) == 200:
                return True
            time.sleep(0.05)
        return False


class Redis:
    def __init__(self, work):
        self.port, self.dir = free_port(), os.path.join(work, "redis")
        os.makedirs(self.dir)
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL)
        end = time.time() + 10
        while not redis_answers(self.port):
            if time.time() > end:
                raise SystemExit("redis-server does not answer")
            time.sleep(0.02)


class Ledger:
    """What the clients saw: answers by (path, status), and each admitted call's times."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answers = collections.Counter()
        self.errors = collections.Counter()
        self.unexpected = []
        self.admitted = collections.defaultdict(list)  # account -> [(send, recv)]
        self.holds = collections.defaultdict(list)     # account -> [(start, end)]
        self.cut_calls = 0                             # gateway calls cut by a kill -9

    def answer(self, path, status, body=b""):
        with self.lock:
            self.answers[(path, status)] += 1
            documented_503 = status == 503 and b"unavailable" in body
            if status >= 500 and not documented_503 and len(self.unexpected) < 20:
                self.unexpected.append((path, status, body[:200]))

    def error(self, path, error):
        with self.lock:
            self.errors[(path, type(error).__name__)] += 1


def decision_worker(index, instances, ledger, stop):
    rng = random.Random(index)
    turn = index
    while not stop.is_set():
        account = ACCOUNTS[rng.randrange(len(ACCOUNTS))]
        first, second = instances[turn % 2], instances[(turn + 1) % 2]
        turn += 1
        body = json.dumps({"account": account, "api": "text", "model": "MiniMax-M2",
                           "units": rng.randint(1, 1000), "lease_ttl_ms": LEASE_TTL_MS})
        sent = time.monotonic()
        try:
            status, answer = http_call(first.port, "POST", "/v1/acquire", body)
        except OSError as error:
            ledger.error("/v1/acquire", error)
            time.sleep(0.05)
            continue
        received = time.monotonic()
        ledger.answer("/v1/acquire", status, answer)
        if status != 200:
            if status == 503:
                time.sleep(0.05)
            continue
        lease = json.loads(answer)["lease"]
        with ledger.lock:
            ledger.admitted[account].append((sent, received))
        time.sleep(rng.uniform(0, 0.06))
        settle = json.dumps({"lease": lease, "units": rng.randint(0, 1000)})
        settle_sent = time.monotonic()
        with ledger.lock:
            ledger.holds[account].append((received, min(settle_sent, sent + LEASE_TTL_MS / 1000)))
        try:
            status, answer = http_call(second.port, "POST", "/v1/settle", settle)
            ledger.answer("/v1/settle", status, answer)
        except OSError as error:
            ledger.error("/v1/settle", error)


def gateway_worker(index, instances, ledger, stop):
    rng = random.Random(1000 + index)
    turn = index
    while not stop.is_set():
        instance = instances[turn % 2]
        turn += 1
        stream = rng.random() < 0.5
        body = json.dumps({"model": "MiniMax-M2", "stream": stream, "max_tokens": 40,
                           "messages": [{"role": "user", "content": "hello"}]})
        headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json",
                   "x-mock-completion-tokens": "20", "x-mock-event-interval-ms": "5"}
        sent = time.monotonic()
        try:
            c = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=10)
            c.request("POST", "/v1/chat/completions", body, headers)
            response = c.getresponse()
            answer = response.read()
            c.close()
        except (OSError, http.client.HTTPException) as error:
            ledger.error("/v1/chat/completions", error)
            if not isinstance(error, ConnectionRefusedError):
                # Cut mid-call (the instance was killed): if it had been admitted, its
                # slot is held until the lease's TTL (an hour), as no one is left to settle.
                with ledger.lock:
                    ledger.cut_calls += 1
            time.sleep(0.05)
            continue
        received = time.monotonic()
        ledger.answer("/v1/chat/completions", response.status, answer)
        if response.status == 200:
            with ledger.lock:
                ledger.admitted["bench"].append((sent, received))
        elif response.status in (429, 503):
            time.sleep(0.05)


def over_admitted_requests(calls, limit, window):
    """Starting points i with `limit` + 1 admitted calls sent at or after call i's send
    whose latest answer came less than `window` after it: each such set was decided
    within less than `window`, so the limit was surely exceeded."""
    calls = sorted(calls)
    heap, found = [], 0  # max-heap (negated) of the smallest `limit + 1` answer times
    for send, received in reversed(calls):
        heapq.heappush(heap, -received)
        if len(heap) > limit + 1:
            heapq.heappop(heap)
        if len(heap) == limit + 1 and -heap[0] - send < window:
            found += 1
    return found


def over_admitted_slots(holds, limit):
    """Moments at which more than `limit` slots were surely held at once."""
    events = sorted([(start, 1) for start, end in holds if end > start] +
                    [(end, -1) for start, end in holds if end > start])
    held, found = 0, 0
    for _, change in events:
        held += change
        if held > limit:
            found += 1
    return found


def concurrency_in_use(instance, account):
    status, body = http_call(instance.port, "GET", f"/admin/v1/accounts/{account}/usage",
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if status != 200:
        return f"status {status}"
    used = 0

    def visit(value):
        nonlocal used
        if isinstance(value, dict):
            if value.get("dimension") == "concurrency":
                used += int(value.get("used", 0))
            for child in value.values():
                visit(child)
        elif isinstance(value, list):
            for child in value:
                visit(child)
    visit(json.loads(body))
    return used


def reload_count(instance):
    value = metric(instance.port, 'weir_config_reloads_total{result="success"}')
    return None if value is None else int(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary")
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--fault-every", type=float, default=40)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--gateway-workers", type=int, default=2)
    options = parser.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is missing: scripts/install-deps --tests")

    work = tempfile.mkdtemp(prefix="weir-soak.")
    with open(os.path.join(work, "admin-token"), "w") as f:
        f.write(ADMIN_TOKEN)
    upstream_port = free_port()
    upstream = subprocess.Popen([options.binary, "mock-upstream", "--port", str(upstream_port),
                                 "--log-level", "error"])
    redis = Redis(work)
    a = Instance("a", options.binary, work, redis.port, upstream_port)
    b = Instance("b", options.binary, work, redis.port, upstream_port)
    instances, ledger, stop = [a, b], Ledger(), threading.Event()
    faults, recoveries = [], []
    try:
        if not (a.wait_ready() and b.wait_ready()):
            sys.exit("the instances did not become ready")
        threads = [threading.Thread(target=decision_worker, args=(n, instances, ledger, stop), daemon=True)
                   for n in range(options.workers)]
        threads += [threading.Thread(target=gateway_worker, args=(n, instances, ledger, stop), daemon=True)
                    for n in range(options.gateway_workers)]
        for thread in threads:
            thread.start()
        time.sleep(min(5, options.duration / 10))
        rss_start = rss_kib(b.process.pid)
        started = time.time()
        next_fault, kind = started + options.fault_every, 0
        while time.time() - started < options.duration:
            time.sleep(0.2)
            if time.time() < next_fault or time.time() - started > options.duration - 15:
                continue
            at = time.time() - started
            if kind % 4 == 0:
                redis.process.send_signal(signal.SIGKILL)
                redis.process.wait()
                down_since = time.time()
                said_not_ready = set()
                while time.time() - down_since < 5:
                    for instance in instances:
                        if ready_status(instance.port) == 503:
                            said_not_ready.add(instance.name)
                    time.sleep(0.05)
                redis.start()
                back = time.time()
                pending = {instance.name: instance for instance in instances}
                ready_after = {}
                while pending and time.time() - back < 30:
                    for name, instance in list(pending.items()):
                        if ready_status(instance.port) == 200:
                            ready_after[name] = time.time() - back
                            del pending[name]
                    time.sleep(0.05)
                recoveries.append(max(ready_after.values()) if not pending else None)
                faults.append((at, "Redis killed (-9), back after 5 s",
                               f"/readyz 503 during the outage on {', '.join(sorted(said_not_ready)) or 'neither'}; "
                               f"both 200 again {max(ready_after.values()):.2f} s after Redis answered"
                               if not pending else f"NOT ready 30 s after Redis answered: {sorted(pending)}"))
            elif kind % 4 == 1:
                a.process.send_signal(signal.SIGKILL)
                a.process.wait()
                time.sleep(2)
                a.start()
                restarted = time.time()
                ok = a.wait_ready()
                faults.append((at, "instance A killed (-9), restarted after 2 s",
                               f"ready {time.time() - restarted:.2f} s after its restart" if ok else "NOT ready in 30 s"))
            elif kind % 4 == 2:
                before = reload_count(b)
                b.process.send_signal(signal.SIGHUP)
                end = time.time() + 5
                while reload_count(b) == before and time.time() < end:
                    time.sleep(0.05)
                faults.append((at, "SIGHUP to B", f"reloads {before} -> {reload_count(b)}"))
            else:
                status, _ = http_call(a.port, "POST", "/admin/v1/reload",
                                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                faults.append((at, "POST /admin/v1/reload to A", f"status {status}"))
            kind += 1
            next_fault = time.time() + options.fault_every
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        elapsed = time.time() - started
        rss_end = rss_kib(b.process.pid)
        time.sleep(LEASE_TTL_MS / 1000 + 1)
        leaked = {account: concurrency_in_use(b, account) for account in ACCOUNTS + ["bench"]}

        print(f"## Soak: {elapsed:.0f} s, {options.workers} decision and {options.gateway_workers} gateway workers, "
              f"a fault every {options.fault_every:.0f} s\n")
        print("| path | status | answers |\n| --- | --- | --- |")
        for (path, status), count in sorted(ledger.answers.items()):
            print(f"| {path} | {status} | {count:,} |")
        for (path, error), count in sorted(ledger.errors.items()):
            print(f"| {path} | no answer: {error} | {count:,} |")
        total = sum(ledger.answers.values())
        print(f"\n{total:,} answers ({total / elapsed:.0f}/s).")
        print(f"Server errors other than the documented 503: **{len(ledger.unexpected)}**"
              + "".join(f"\n  - {path} {status} {body!r}" for path, status, body in ledger.unexpected))
        over_requests = sum(over_admitted_requests(calls, REQUESTS, WINDOW_S) for calls in ledger.admitted.values())
        over_slots = sum(over_admitted_slots(holds, CONCURRENCY) for holds in ledger.holds.values())
        admitted = sum(len(calls) for calls in ledger.admitted.values())
        print(f"Admitted calls: {admitted:,}. Definite over-admission: requests **{over_requests}**, "
              f"concurrency **{over_slots}**.")
        print(f"Concurrency in use {LEASE_TTL_MS / 1000 + 1:.0f} s after the load stopped: "
              + ", ".join(f"{account} {used}" for account, used in leaked.items())
              + f" (the gateway's account may hold at most the {ledger.cut_calls} calls cut by a kill -9 "
              "until their lease's TTL, an hour: nobody is left to settle them)")
        print("\n| at (s) | fault | what followed |\n| --- | --- | --- |")
        for at, fault, result in faults:
            print(f"| {at:.0f} | {fault} | {result} |")
        measured = [r for r in recoveries if r is not None]
        if recoveries:
            print(f"\nRedis back -> both ready: {len(measured)}/{len(recoveries)} recovered, "
                  f"at most {max(measured):.2f} s." if measured else "\nRedis back -> never ready")
        print(f"Resident memory of B: {rss_start:,} KiB after warm-up, {rss_end:,} KiB at the end.")
        failed = (ledger.unexpected or over_requests or over_slots or len(measured) != len(recoveries)
                  or any(used != 0 for account, used in leaked.items() if account != "bench")
                  or not isinstance(leaked["bench"], int) or leaked["bench"] > ledger.cut_calls)
        sys.exit(1 if failed else 0)
    finally:
        stop.set()
        for process in [a.process, b.process, upstream, redis.process]:
            if process and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
