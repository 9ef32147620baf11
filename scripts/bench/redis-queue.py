#!/usr/bin/env python3
"""The reference for scripts/bench/jobs: a bare Redis list queue, which keeps nothing on disk.

Mirrors Carafe's pull workload: N small JSON jobs pushed in batches of 1,000 (one pipeline
each); W worker processes, each taking up to 100 jobs at a time (LPOP with a count, BLPOP with
a 1 s timeout when the list is empty) and completing each job with its own round trip
(SADD done <id>), as a worker written the obvious way does. Prints one JSON line.

  redis-queue.py --port PORT --jobs N --workers W
Needs redis-py (with hiredis) and a redis-server to talk to.
"""
import argparse
import json
import multiprocessing
import time

import redis

QUEUE = "bench:queue"
DONE = "bench:done"


def worker(port):
    r = redis.Redis(port=port)
    while True:
        jobs = r.lpop(QUEUE, 100)
        if not jobs:
            got = r.blpop(QUEUE, timeout=1)
            if got is None:
                continue
            jobs = [got[1]]
        for raw in jobs:
            job = json.loads(raw)
            r.sadd(DONE, job["id"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jobs", type=int, default=20000)
    p.add_argument("--workers", type=int, default=4)
    a = p.parse_args()
    r = redis.Redis(port=a.port)
    r.delete(QUEUE, DONE)
    started = time.monotonic()
    procs = [multiprocessing.Process(target=worker, args=(a.port,), daemon=True) for _ in range(a.workers)]
    for proc in procs:
        proc.start()
    for start in range(0, a.jobs, 1000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(start + 1000, a.jobs)):
            pipe.rpush(QUEUE, json.dumps({"id": i, "args": {"i": i}}))
        pipe.execute()
    while r.scard(DONE) < a.jobs:
        time.sleep(0.002)
    took = time.monotonic() - started
    for proc in procs:
        proc.terminate()
    print(json.dumps({"mode": "redis", "jobs": a.jobs, "workers": a.workers,
                      "seconds": took, "jobs_per_s": a.jobs / took}))


if __name__ == "__main__":
    main()
