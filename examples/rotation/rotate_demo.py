"""Rotation end to end on the in-memory store: no server needed.

    python examples/rotation/rotate_demo.py

A service accepts the current key and, during the grace window, the previous one. Eight reader
threads call it through ``retry_on_rotation`` while the key is rotated; none of them sees an
error. Then a rotation whose verification hook fails leaves the old key current.
"""

from __future__ import annotations

import tempfile
import threading
import time

import leaseline
from leaseline import Resolver, Secret
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend
from leaseline.rotation import DAY, check, run

REF = "memory://svc/webhook#token"


class Rejected(Exception):
    pass


def main() -> None:
    MemoryBackend.put(
        "memory", "svc/webhook", {"token": "initial-token"}, now=time.time() - 40 * DAY
    )
    accepted = {"initial-token"}

    def service(token: str) -> None:
        if token not in accepted:
            raise Rejected("unknown token")

    config = Config.from_mapping(
        {
            "rotation": {
                "deploy_marker": tempfile.mkdtemp() + "/deploy.json",
                "kinds": {"webhook-secret": "30d"},
                "policies": [
                    {
                        "match": "memory://svc/*",
                        "kind": "webhook-secret",
                        "rotator": "random-token",
                        "grace": "1s",
                    }
                ],
            }
        }
    )
    admin = Resolver(config, handle_signals=False)
    readers = Resolver(config, handle_signals=False)
    for c in check(admin):
        print(f"{c.status:>9}  {c.ref}  {c.kind}  limit {c.limit}")

    errors, calls = [], [0]
    stop = threading.Event()

    @leaseline.retry_on_rotation(REF, on=(Rejected,), resolver=readers)
    def call() -> None:
        service(readers.resolve(REF))

    def loop() -> None:
        while not stop.is_set():
            try:
                call()
                calls[0] += 1
            except Exception as exc:
                errors.append(exc)
            time.sleep(0.01)

    threads = [threading.Thread(target=loop) for _ in range(8)]
    for t in threads:
        t.start()

    def verify(secret: Secret) -> bool:  # "register" the new token with the service
        accepted.add(secret.reveal("token"))
        return True

    def grace(seconds: float) -> None:  # old and new both accepted here; then the old one goes
        time.sleep(seconds)
        accepted.discard("initial-token")

    _, results = run(admin, verify=verify, sleep=grace)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    for r in results:
        print(f"{r.outcome:>9}  {r.ref}  version {r.previous_version} -> {r.version}")
    print(f"readers: {calls[0]} calls, {len(errors)} errors")

    _, (failed,) = run(admin, refs=[REF], verify=lambda s: False, sleep=lambda s: None)
    print(f"{failed.outcome:>9}  {failed.message}")
    admin.close()
    readers.close()


if __name__ == "__main__":
    main()
