"""Is a finding the *current* value of a managed reference?

With ``[audit] hmac_key`` configured, the references the config names (alias targets, concrete
rotation-policy matches, ``[scan] managed``) are resolved and each value is reduced at once to
HMAC-SHA256 under the audit key; candidates found in files are reduced the same way and compared
in constant time. Values live only in local variables while their digest is computed: nothing is
stored, printed or written. The digest is the audit trail's per-field ``value_hmacs`` entry
(:func:`leaseline.audit.value_hmac`), so a finding's digest also finds the events that handed
that value out.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .._config import Config
from .._exceptions import LeaselineError
from ..audit import audit_key, value_hmac

if TYPE_CHECKING:
    from .._resolver import Resolver

__all__ = ["ManagedValues", "managed_references"]

_GLOB = set("*?[")


def managed_references(config: Config) -> list[str]:
    """Every concrete reference the config names, sorted, without duplicates."""
    refs: set[str] = {v for v in config.aliases.values() if "://" in v}
    rotation = config.section("rotation")
    policies = rotation.get("policies", [])
    if isinstance(policies, list):
        for policy in policies:
            match = policy.get("match") if isinstance(policy, Mapping) else None
            if isinstance(match, str) and "://" in match and not _GLOB & set(match):
                refs.add(match)
    extra = config.section("scan").get("managed", [])
    if isinstance(extra, list):
        refs.update(str(r) for r in extra if "://" in str(r))
    return sorted(refs)


class ManagedValues:
    """Digests of the current values of managed references, keyed to the reference."""

    def __init__(self, key: bytes, digests: Mapping[str, str] | None = None) -> None:
        self._key = key
        self._digests: dict[str, str] = dict(digests or {})
        #: (reference, error class) for references that could not be read; never values
        self.errors: list[tuple[str, str]] = []

    def digest(self, value: str) -> str:
        """``hmac-sha256:<hex>``: what the audit trail's ``value_hmacs`` holds for ``value``."""
        return value_hmac(self._key, value)

    def add(self, ref: str, value: str) -> None:
        for form in {value, value.strip()}:
            if form:
                self._digests[self.digest(form)] = ref

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, candidate: str) -> str | None:
        """The reference whose current value is ``candidate``, or ``None``."""
        want = self.digest(candidate)
        found = None
        for digest, ref in self._digests.items():
            if hmac.compare_digest(digest, want):
                found = ref
        return found

    @classmethod
    def from_resolver(
        cls, resolver: Resolver, refs: Iterable[str] | None = None
    ) -> ManagedValues | None:
        """Read ``[audit] hmac_key`` and every managed reference; ``None`` without a key."""
        config = resolver.config
        key = audit_key(config.section("audit"), resolver.resolve)
        if key is None:
            return None
        values = cls(key)
        for ref in managed_references(config) if refs is None else refs:
            try:
                parsed = resolver.parse(ref)
                secret = resolver.get(parsed)
                if parsed.field:
                    values.add(str(parsed), secret.reveal(parsed.field))
                else:
                    for name in secret.fields:
                        shown = str(parsed) if len(secret.fields) == 1 else f"{parsed.key}#{name}"
                        values.add(shown, secret.reveal(name))
            except LeaselineError as exc:
                values.errors.append((ref, type(exc).__name__))
        return values
