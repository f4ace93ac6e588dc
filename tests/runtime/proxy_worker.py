"""A task process behind ``leaseline proxy`` (no Vault token of its own); run by test_proxy.

``once REF``: resolve a database credential, log in to PostgreSQL with it, print JSON.
``loop REF``: read REF every 0.2 s (cache off) and print ``ok`` or ``err TYPE MESSAGE`` lines.
``rotate REF SECONDS``: hold REF with ``on_rotate``, 4 readers log in through
``retry_on_rotation`` for SECONDS, print JSON (rotations, errors, usernames).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import leaseline
import psycopg
from leaseline import Resolver


def login(secret: leaseline.Secret) -> str:
    user = secret.reveal("username")
    with psycopg.connect(
        host=os.environ["PGHOST"],
        port=int(os.environ["PGPORT"]),
        dbname="postgres",
        user=user,
        password=secret.reveal("password"),
        connect_timeout=5,
    ) as conn:
        conn.execute("SELECT 1")
    return user


def once(ref: str) -> None:
    with Resolver() as resolver:
        secret = resolver.get(ref)
        assert secret.lease is not None
        print(json.dumps({"username": login(secret), "lease_id": secret.lease.id}), flush=True)


def loop(ref: str) -> None:
    with Resolver() as resolver:
        while True:
            try:
                resolver.get(ref)
                print("ok", flush=True)
            except leaseline.LeaselineError as exc:
                print(f"err {type(exc).__name__} {exc}".replace("\n", " "), flush=True)
            time.sleep(0.2)


def rotate(ref: str, seconds: float) -> None:
    rotations: list[str] = []
    errors: list[str] = []
    users: set[str] = set()
    stop = threading.Event()
    with Resolver() as resolver, resolver.lease(ref, on_rotate=lambda r, o, n: rotations.append(r)):

        @leaseline.retry_on_rotation(ref, on=(psycopg.OperationalError,), resolver=resolver)
        def call() -> str:
            return login(resolver.get(ref))

        def reader() -> None:
            while not stop.is_set():
                try:
                    users.add(call())
                except Exception as exc:  # what a reader would see: must never happen
                    errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.3)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(30)
    print(json.dumps({"rotations": len(rotations), "errors": errors, "users": sorted(users)}))


if __name__ == "__main__":
    mode, ref = sys.argv[1], sys.argv[2]
    if mode == "once":
        once(ref)
    elif mode == "loop":
        loop(ref)
    else:
        rotate(ref, float(sys.argv[3]))
