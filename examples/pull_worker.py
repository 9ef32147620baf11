#!/usr/bin/env python3
"""A minimal Carafe pull worker, standard library only.

    CARAFE_URL=http://localhost:8080 CARAFE_KEY=ck_... python3 examples/pull_worker.py emails

It claims jobs from a queue (long-polling), keeps their leases alive while it works, reports
progress, and completes or fails each one. Replace `handle` with your own work.
"""

import json
import os
import sys
import threading
import urllib.error
import urllib.request

BASE = os.environ.get("CARAFE_URL", "http://localhost:8080").rstrip("/")
KEY = os.environ["CARAFE_KEY"]
LEASE_MS = 60_000


def call(path, body):
    req = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=90) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as err:  # problem+json: {"code": ..., "detail": ...}
        return err.code, json.load(err)


def handle(job, report):
    """Your work. Return a JSON-able result, or raise to fail the attempt."""
    report({"current": 1, "total": 1, "stage": "working"})
    return {"echo": job["args"]}


def keep_lease(job, stop):
    # Renew the lease every third of it; stop early if the job was cancelled or lost.
    while not stop.wait(LEASE_MS / 3000):
        status, answer = call(f"/api/v1/jobs/{job['id']}/heartbeat",
                              {"lease_token": job["lease_token"], "lease_ms": LEASE_MS})
        if status != 200 or answer.get("cancel_requested"):
            job["cancelled"] = True
            return


def work(job):
    stop = threading.Event()
    threading.Thread(target=keep_lease, args=(job, stop), daemon=True).start()
    token = job["lease_token"]

    def report(progress):
        call(f"/api/v1/jobs/{job['id']}/progress", {"lease_token": token, "progress": progress})

    try:
        result = handle(job, report)
        call(f"/api/v1/jobs/{job['id']}/complete", {"lease_token": token, "result": result})
    except Exception as err:  # the attempt failed: Carafe retries with backoff
        call(f"/api/v1/jobs/{job['id']}/fail", {"lease_token": token, "error": str(err)})
    finally:
        stop.set()


def main():
    queue = sys.argv[1] if len(sys.argv) > 1 else "default"
    exit_when_idle = "--exit-when-idle" in sys.argv
    while True:
        status, answer = call(f"/api/v1/queues/{queue}/claim",
                              {"worker": f"python-{os.getpid()}", "max": 10,
                               "wait_ms": 1000 if exit_when_idle else 30_000, "lease_ms": LEASE_MS})
        if status != 200:
            sys.exit(f"claim failed: {status} {answer}")
        if not answer["jobs"] and exit_when_idle:
            return
        for job in answer["jobs"]:
            work(job)


if __name__ == "__main__":
    main()
