#!/usr/bin/env python3
"""Redis's own CPU per decision, all in (the Lua code, argument parsing, replies, network
I/O: `INFO cpu` over the run divided by the decisions), for the project's acquire function
and for bench/redis_floor.lua, the least a two-GCRA decision with per-account state can
cost (one HMGET and one HSET per call, no exactness, statuses or TTLs), in batches of the
sizes RedisStore sends under load.

    bench/redis_floor.py [--calls 40000] [--batches 11,32] [--reps 3] [--old REV]

The floor runs twice: as an EVAL script (EVALSHA, the yardstick since the store's scripts
were EVAL scripts) and as a function (FCALL, as the store calls its library now), so the
ratio shows no artefact of either. --old REV adds that revision's acquire code (its
library, or its EVAL script from before the library) to the same run: before and after.

One private redis-server pinned to core 0 (stopped by its PID at the end), an empty
database per run; the calls are bench/redis.sh's (Redis TIME, requests GCRA 6,000/min,
tokens GCRA 1,000,000/min, 100 units, no lease, 1,000 random accounts), sent four
batches per pipelined write. Each figure is the minimum over --reps runs, the variants
alternating within each rep. A decision costing Redis C us caps one Redis at 1e6 / C
decisions/s, whatever the client does. Needs redis-server and the `redis` Python package
(bench/redis.sh installs them).
"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redis_script_cost as cost  # noqa: E402  (the code's loading and start_redis)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40000)
    parser.add_argument("--batches", default="11,32")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--old", help="also measure this git revision's acquire code")
    options = parser.parse_args()
    floor = open(os.path.join(ROOT, "bench", "redis_floor.lua")).read()
    floor_library = ("#!lua name=weir_floor\nredis.register_function('weir_floor', function(KEYS, ARGV)\n"
                     + floor + "\nend)\n")
    work, _, client = cost.start_redis("weir-redis-floor.", core=0)
    item = ["g 6000 60000000000 6000", "g 1000000 60000000000 1000000", "", "0", "100", "", "-"]

    def cpu():
        info = client.info("cpu")
        return info["used_cpu_sys"] + info["used_cpu_user"]

    try:
        client.execute_command("FUNCTION", "LOAD", "REPLACE", floor_library)
        variants = {"acquire function (Lua/weir.lua)": cost.Code().load(client).command("acquire")}
        if options.old:
            old = cost.Code(options.old, version="old")
            kind = "function" if old.library is not None else "EVAL script"
            variants[f"acquire {kind} at {options.old}"] = old.load(client).command("acquire")
        variants["floor (bench/redis_floor.lua), EVAL script"] = ["EVALSHA", client.script_load(floor)]
        variants["floor (bench/redis_floor.lua), function"] = ["FCALL", "weir_floor"]
        print("| code | batch | Redis CPU per decision (us) | decisions/s one Redis core allows |")
        print("| --- | --- | --- | --- |")
        for size in (int(x) for x in options.batches.split(",")):
            rng = random.Random(size)
            batches = []
            for _ in range(options.calls // size):
                keys, argv = [], ["", "1000"]
                for _ in range(size):
                    base = f"rb:{{acct{rng.randrange(1000)}|chat}}"
                    keys += [base, base + ":rlog", base + ":tlog", base + ":slots", base + ":lease:-"]
                    argv += item
                batches.append((keys, argv))
            best = {name: float("inf") for name in variants}
            for _ in range(options.reps):
                for name, command in variants.items():
                    client.flushall()
                    before, calls = cpu(), 0
                    pipe = client.pipeline(transaction=False)
                    for keys, argv in batches:
                        pipe.execute_command(*command, len(keys), *keys, *argv)
                        calls += size
                        if len(pipe) >= 4:
                            pipe.execute()
                    pipe.execute()
                    best[name] = min(best[name], (cpu() - before) * 1e6 / calls)
            for name in variants:
                print(f"| {name} | {size} | {best[name]:.2f} | {1e6 / best[name]:,.0f} |")
    finally:
        os.kill(int(open(f"{work}/pid").read()), 15)


if __name__ == "__main__":
    main()
