"""``leaseline agent``: a sidecar that keeps rendered secret files fresh and revokes on stop.

Compared with Vault Agent's template mode: the same files-and-renewal model, but every lease is
revoked when the agent is stopped (hashicorp/vault#6492), and a credential is re-issued only at
``max_ttl`` or on rotation - not on every poll, as the Secrets Store CSI driver re-mints dynamic
credentials (secrets-store-csi-driver#1453). For batch pods that need no renewal, ``--once``
(= ``leaseline render``) renders and exits (vault-k8s#120's pre-populate-only).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .._ledger import Entry, Ledger, Unrevoked
    from .._resolver import Resolver
    from .._secret import Secret
    from .render import Output

__all__ = ["Agent", "Notify"]


@dataclass(frozen=True)
class Notify:
    """``--signal PIDFILE:SIGNAL``: signal the process whose pid is in PIDFILE after a re-render."""

    pidfile: Path
    signum: int

    @classmethod
    def parse(cls, text: str) -> Notify:
        path, sep, name = text.rpartition(":")
        name = name.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        signum = getattr(signal, name, None)
        if not sep or not path or not isinstance(signum, signal.Signals):
            raise click.BadParameter(
                f"{text!r}: expected PIDFILE:SIGNAL, e.g. /run/app.pid:HUP", param_hint="--signal"
            )
        return cls(Path(path), int(signum))

    def send(self) -> str:
        try:
            pid = int(self.pidfile.read_text().split()[0])
            os.kill(pid, self.signum)
        except (OSError, ValueError, IndexError) as exc:
            return f"could not signal the pid in {self.pidfile}: {type(exc).__name__}"
        return f"sent {signal.Signals(self.signum).name} to pid {pid}"


def _say(message: str) -> None:
    click.echo(f"leaseline agent: {message}", err=True)


class Agent:
    """Holds a lease per reference, re-renders on rotation, revokes everything on :meth:`stop`."""

    def __init__(
        self,
        resolver: Resolver,
        outputs: list[Output],
        ledger: Ledger,
        *,
        notify: tuple[Notify, ...] = (),
        interval: float = 1.0,
    ) -> None:
        from .._ledger import Recorder
        from .render import Renderer

        self.resolver = resolver
        self.renderer = Renderer(resolver, outputs)
        self.ledger = ledger
        self.recorder = Recorder(ledger, resolver, "agent")
        self.notify = notify
        self.interval = interval
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.stack = ExitStack()
        self.adopted: list[Entry] = []
        self.rotations = 0
        self._stores = sorted({p.store for p in self.renderer.parsed.values()})

    def _rotated(self, ref: str, old: Secret, new: Secret) -> None:
        self.rotations += 1
        self.wake.set()

    def start(self) -> None:
        """Take the leases, adopt what ``render`` handed over, write every file."""
        for key in self.renderer.keys:
            self.stack.enter_context(self.resolver.lease(key, on_rotate=self._rotated))
        self._adopt()
        self.renderer.render(force=True)
        self.recorder.record(self._stores)

    def _adopt(self) -> None:
        """Leases of these references that a finished ``leaseline render`` handed over: ours now,
        revoked when the agent stops (they are not renewed: they end at their own TTL)."""
        keys = set(self.renderer.keys)
        from .._ledger import lease_record

        for entry in self.ledger.entries():
            if entry.kind != "lease" or entry.ref not in keys or entry.alive():
                continue
            if entry.run.get("cmd") != "render":
                continue
            self.adopted.append(entry)
        if self.adopted:
            self.ledger.append(
                *(lease_record(e.store, e.ref, e.lease_id, e.expires_at) for e in self.adopted)
            )
            _say(f"took over {len(self.adopted)} lease(s) from `leaseline render`")

    def tick(self) -> list[Path]:
        """Re-render what changed; signal the application if anything did."""
        written = self.renderer.render()
        if written:
            self.recorder.record(self._stores)
            for path in written:
                _say(f"re-rendered {os.fspath(path)}")
            for target in self.notify:
                _say(target.send())
        return written

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(self.interval)
            self.wake.clear()
            if self.stopping.is_set():
                break
            try:
                self.tick()
            except Exception as exc:  # a store outage: cached values serve inside their lease
                from ..masking import masker

                _say(f"render failed, retrying: {masker().mask(str(exc))}")

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def close(self) -> list[Unrevoked]:
        """Revoke every lease: ours (through the resolver) and the adopted ones. Returns what
        could not be revoked (kept in the ledger as pending)."""
        from .._exceptions import LeaselineError
        from .._ledger import Unrevoked, revoked_record
        from .._secret import Lease

        unrevoked: list[Unrevoked] = []
        try:
            self.stack.close()
            self.resolver.close()
        finally:
            unrevoked += self.resolver.unrevoked
            for entry in self.adopted:
                try:
                    lease = Lease(entry.lease_id, True, 0.0, 0.0, entry.expires_at or 0.0)
                    self.resolver.backend(entry.store).revoke(lease)
                    self.ledger.append(revoked_record(entry.id))
                except LeaselineError as exc:
                    _say(f"could not revoke an adopted lease of {entry.ref}: {exc}")
                    failure = Unrevoked.from_entry(entry, type(exc).__name__)
                    self.ledger.append(failure.record())
                    unrevoked.append(failure)
            self.recorder.done()
        return unrevoked
