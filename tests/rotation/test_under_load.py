"""A Secrets Manager secret rotated under 16 reading threads: no error reaches the callers."""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

import leaseline
from leaseline import Resolver
from leaseline._config import Config

from tests.servers import MotoServer


class VendorRejected(Exception):
    """What an LLM vendor's SDK raises for a revoked key (401)."""


def test_rotation_window_under_load(aws_env: MotoServer, canary: Any) -> None:
    sm = aws_env.client("secretsmanager")
    name = "prod/openai-" + secrets.token_hex(4)
    first = canary.new()
    sm.create_secret(Name=name, SecretString=json.dumps({"api_key": first}))
    valid = {first}  # the vendor's view of which keys work
    lock = threading.Lock()
    ref = f"aws-sm://{name}#api_key"
    resolver = Resolver(
        Config.from_mapping({"resolver": {"refresh_after": "1h"}}), handle_signals=False
    )

    @leaseline.retry_on_rotation(ref, on=(VendorRejected,), resolver=resolver, window=20)
    def call_vendor() -> str:
        key = resolver.resolve(ref)
        with lock:
            if key not in valid:
                raise VendorRejected("401 invalid api key")
        return key

    errors: list[BaseException] = []
    calls = [0]
    served: set[str] = set()  # keys callers got back
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                served.add(call_vendor())
                calls[0] += 1
            except BaseException as exc:  # any error reaching a caller fails the test
                errors.append(exc)
            time.sleep(0.01)

    threads = [threading.Thread(target=reader) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):  # three rotations: stage new, promote, revoke the old key at once
            time.sleep(0.5)
            new = canary.new()
            sm.put_secret_value(SecretId=name, SecretString=json.dumps({"api_key": new}))
            with lock:
                valid.clear()
                valid.add(new)  # the old version is removed: every cached copy is now wrong
            # the next rotation only once readers are through this one (a loaded machine must
            # not fold two rotations into one re-read)
            deadline = time.monotonic() + 20
            while new not in served and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        resolver.close()
    assert not errors, [type(e).__name__ for e in errors[:3]]
    assert calls[0] > 100
    assert resolver.requests[f"aws-sm://{name}"] >= 4  # re-read after each rotation
