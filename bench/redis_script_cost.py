#!/usr/bin/env python3
"""Server-side cost of the Redis store's Lua code: Redis's own `INFO commandstats`
usec_per_call of FCALL (time inside the function, without network I/O), which is robust
on a busy machine where throughput figures are not.

The code is read from Sources/WeirRedis/Lua/weir.lua (no Swift build needed), of the
working tree or of a git revision (--rev), so that two versions can be measured in one
go; a revision from before the function library has EVAL scripts in
Sources/WeirRedis/RedisScripts.swift, called with EVALSHA:

    bench/redis_script_cost.py [--rev REV] [--calls 20000] [--reps 3]

One private redis-server on a free port (stopped by its PID at the end), on an empty
database per measurement:
- floor: `return 1` with the arguments of the acquire call below;
- acquire: redis-benchmark -c 64 FCALL with exactly the arguments bench/redis.sh uses
  (Redis TIME, requests GCRA 6,000/min, tokens GCRA 1,000,000/min, 100 units, no lease,
  1,000 random accounts); the same with sliding-window limits;
- with leases (a pipelined client, calls/10 of each): acquire with a 60 s lease, settle
  of each lease (actual units 50..149 against 100 reserved: refunds and charges), status;
  the same with a concurrency limit.
Each figure is the minimum over --reps runs. Needs redis-server, redis-benchmark and the
`redis` Python package (bench/redis.sh installs them).
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

try:
    import redis
except ImportError:
    sys.exit("redis_script_cost.py: the `redis` Python package is missing (python3 -m pip install redis)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = "Sources/WeirRedis/Lua/weir.lua"
SCRIPTS = "Sources/WeirRedis/RedisScripts.swift"


class Code:
    """Weir's Lua code at a revision (None: the working tree), loaded into a Redis: the
    function library (called with FCALL), or before it the EVAL scripts (EVALSHA)."""

    def __init__(self, rev=None, version="bench"):
        def read(path):
            if rev is None:
                return open(os.path.join(ROOT, path)).read()
            return subprocess.check_output(["git", "-C", ROOT, "show", f"{rev}:{path}"], text=True,
                                           stderr=subprocess.DEVNULL)
        try:
            self.library = read(LIBRARY).replace("{{version}}", version)
            self.scripts = None
        except (OSError, subprocess.CalledProcessError):
            self.library = None
            self.scripts = scripts(read(SCRIPTS))
        self.version = version
        self.names = {}

    def load(self, client):
        if self.library is not None:
            client.execute_command("FUNCTION", "LOAD", "REPLACE", self.library)
            self.names = {name: f"weir_{name}_{self.version}" for name in ("acquire", "settle", "status")}
        else:
            self.names = {name: client.script_load(text) for name, text in self.scripts.items()}
        return self

    def command(self, name):
        """The command and its first argument that call `name` (then numkeys, keys, args)."""
        if self.library is not None:
            return ["FCALL", self.names[name]]
        return ["EVALSHA", self.names[name]]

    @property
    def stat(self):
        return "cmdstat_fcall" if self.library is not None else "cmdstat_evalsha"


def scripts(text):
    """The acquire, settle and status scripts: each `static let NAME = ...` is a `+` chain of
    raw string literals, "\\n" literals and other such names."""
    defs = {}
    for m in re.finditer(r"static let (\w+) = ", text):
        pos, parts = m.end(), []
        while True:
            rest = text[pos:]
            if rest.startswith('#"""\n'):
                end = rest.index('\n"""#')
                parts.append(("lit", rest[5:end]))
                pos += end + 5
            elif rest.startswith('"'):
                end = rest.index('"', 1)
                parts.append(("lit", rest[1:end].replace("\\n", "\n")))
                pos += end + 1
            else:
                ident = re.match(r"\w+", rest).group(0)
                parts.append(("ref", ident))
                pos += len(ident)
            more = re.match(r"\s*\+\s*", text[pos:])
            if not more:
                break
            pos += more.end()
        defs[m.group(1)] = parts

    def value(name):
        return "".join(v if kind == "lit" else value(v) for kind, v in defs[name])

    return {name: value(name) for name in ("acquire", "settle", "status")}


def start_redis(prefix, core=None, decode_responses=False):
    """A private redis-server (no persistence) on a free 127.0.0.1 port, daemonized, in a
    new temporary directory (its PID in WORK/pid: stop it by that PID), pinned to `core`
    if given; returns (work, port, client) once it answers PING (at most 10 s)."""
    work = tempfile.mkdtemp(prefix=prefix)
    port = free_port()
    pin = ["taskset", "-c", str(core)] if core is not None else []
    subprocess.check_call(pin + ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--daemonize", "yes", "--pidfile", f"{work}/pid",
                                 "--dir", work, "--logfile", f"{work}/log"])
    client = redis.Redis(port=port, decode_responses=decode_responses)
    deadline = time.time() + 10
    while True:
        try:
            client.ping()
            return work, port, client
        except redis.exceptions.ConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


KEY = "rb:{acct__rand_int__|chat}"
GCRA = ["g 6000 60000000000 6000", "g 1000000 60000000000 1000000"]
SLIDING = ["s 6000 60000000000 6000", "s 1000000 60000000000 1000000"]


def acquire_args(limits):
    # ARGV as RedisStore sends them for a batch of one call (see bench/redis.sh): now ''
    # (Redis TIME), grace ms, then requests, tokens, concurrency, shadow, units, lease TTL
    # '' (none), lease id.
    return ["", "1000", limits[0], limits[1], "", "0", "100", "", "-"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rev", help="git revision whose scripts to measure (default: the working tree)")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args()
    code = Code(options.rev)
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"redis_script_cost.py: {tool} is missing (bench/redis.sh installs it)")

    work, port, client = start_redis("weir-script-cost.", decode_responses=True)
    try:
        code.load(client)
        floor = ["EVALSHA", client.script_load("return 1")]

        def usec(stat):
            return client.info("commandstats")[stat]["usec_per_call"]

        def benchmark(command, args, stat):
            client.flushall()
            client.config_resetstat()
            subprocess.run(["timeout", "300", "redis-benchmark", "-p", str(port), "-c", "64", "-n", str(options.calls),
                            "-r", "1000", "-q"] + command + ["5", KEY, KEY + ":rlog", KEY + ":tlog", KEY + ":slots",
                            KEY + ":lease:-"] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            return usec(stat)

        def leases(concurrency):
            """usec_per_call of acquire with a lease, settle, status (pipelined, 500 a batch)."""
            count = max(1000, options.calls // 10)
            limits = GCRA + [concurrency]
            client.flushall()
            pipe = client.pipeline(transaction=False)
            out = {}

            def keys(i, lease):
                base = f"rb:{{acct{i % 1000}|chat}}"
                return [base, base + ":rlog", base + ":tlog", base + ":slots"] + ([base + ":lease:" + lease] if lease else [])

            for name, call in (
                ("acquire", lambda i: pipe.execute_command(*code.command("acquire"), 5, *keys(i, f"L{i}"), "", "1000",
                                                           *limits, "0", "100", "60000000000", f"L{i}")),
                ("settle", lambda i: pipe.execute_command(*code.command("settle"), 5, *keys(i, f"L{i}"), "",
                                                          str(50 + i % 100), f"L{i}", "1000")),
                ("status", lambda i: pipe.execute_command(*code.command("status"), 4, *keys(i, None), "", *limits, "1000")),
            ):
                client.config_resetstat()
                for i in range(count):
                    call(i)
                    if len(pipe) >= 500:
                        pipe.execute()
                pipe.execute()
                out[name] = usec(code.stat)
            return out

        rows = {}

        def keep(label, value):
            rows[label] = min(rows.get(label, float("inf")), value)

        for _ in range(options.reps):
            keep("floor: `return 1` (EVALSHA), same arguments", benchmark(floor, acquire_args(GCRA), "cmdstat_evalsha"))
            keep("acquire, GCRA, no lease (bench/redis.sh's call)", benchmark(code.command("acquire"), acquire_args(GCRA), code.stat))
            keep("acquire, sliding window, no lease", benchmark(code.command("acquire"), acquire_args(SLIDING), code.stat))
            for concurrency, suffix in (("", ""), ("g 1000000 1 1000000", ", with a concurrency limit")):
                figures = leases(concurrency)
                keep(f"acquire, GCRA, 60 s lease{suffix}", figures["acquire"])
                keep(f"settle{suffix}", figures["settle"])
                keep(f"status{suffix}", figures["status"])
        version = options.rev or "working tree"
        print(f"| call ({version}) | usec_per_call |")
        print("| --- | --- |")
        for label, value in rows.items():
            print(f"| {label} | {value:.2f} |")
    finally:
        os.kill(int(open(f"{work}/pid").read()), 15)


if __name__ == "__main__":
    main()
