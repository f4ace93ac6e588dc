"""The backend conformance suite. A store's tests subclass :class:`BackendConformance`::

    class TestVault(BackendConformance):
        @pytest.fixture
        def store(self, openbao) -> StoreUnderTest: ...

``StoreUnderTest`` tells the suite how to make secrets in the real store; the suite then checks
what every backend must do: fields, one read per reference, clear errors with no values in them,
single flight, invalidation, masking, metadata. Requires pytest (``pip install 'leaseline[test]'``).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pytest

from . import AccessDenied, Resolver, SecretNotFound
from .backends import SecretMetadata

__all__ = ["BackendConformance", "StoreUnderTest"]


@dataclass
class StoreUnderTest:
    """How the suite talks to a real store, and what that store can do.

    ``put(fields) -> reference`` creates (or overwrites, given ``ref``) a secret and returns its
    reference without a field; ``resolver`` resolves through the store; ``missing`` is a
    reference to a secret that does not exist.

    What the store can do is said here, by the store's fixture, and the suite adapts (no test
    subclass overrides or skips a test):

    - ``denied``: a reference the resolver may not read, or ``None`` when the store has no
      access control of its own (``env``: the process can read its whole environment);
    - ``enforce``: a context in which the store enforces access control (moto checks IAM only
      when asked to), entered around the read of ``denied``;
    - ``multi_field``: one secret holds several named fields (``False`` for a store of single
      values: SSM parameters, environment variables); ``None``: the subclass's
      :attr:`BackendConformance.multi_field` decides (the older form).
    """

    resolver: Resolver
    put: Callable[..., str]
    missing: str
    denied: str | None = None
    enforce: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    multi_field: bool | None = None


def _value() -> str:
    return "conf-" + secrets.token_hex(16)


class BackendConformance:
    """Subclass and provide a ``store`` fixture returning :class:`StoreUnderTest`."""

    #: the default for stores whose :class:`StoreUnderTest` does not say (``multi_field=None``)
    multi_field = True

    def _multi(self, store: StoreUnderTest) -> bool:
        return self.multi_field if store.multi_field is None else store.multi_field

    @pytest.fixture
    def store(self) -> Iterator[StoreUnderTest]:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `store` fixture")

    def test_fields_and_whole_secret(self, store: StoreUnderTest) -> None:
        if not self._multi(store):
            value = _value()
            ref = store.put({"value": value})
            assert store.resolver.resolve(ref) == value
            return
        user, password = _value(), _value()
        ref = store.put({"username": user, "password": password})
        assert store.resolver.resolve(ref + "#username") == user
        assert store.resolver.resolve(ref + "#password") == password
        secret = store.resolver.get(ref)
        assert secret.fields == ["password", "username"]
        with pytest.raises(SecretNotFound) as info:
            store.resolver.resolve(ref + "#nope")
        assert "password" in str(info.value) and password not in str(info.value)

    def test_one_read_serves_every_field(self, store: StoreUnderTest) -> None:
        fields = (
            {"username": _value(), "password": _value()}
            if self._multi(store)
            else {"value": _value()}
        )
        ref = store.put(fields)
        key = store.resolver.parse(ref).key
        before = store.resolver.requests[key]
        for name in fields:
            store.resolver.resolve(f"{ref}#{name}")
            store.resolver.resolve(f"{ref}#{name}")
        assert store.resolver.requests[key] - before == 1

    def test_missing_secret(self, store: StoreUnderTest) -> None:
        with pytest.raises(SecretNotFound) as info:
            store.resolver.resolve(store.missing)
        assert store.resolver.parse(store.missing).key in str(info.value)
        assert isinstance(info.value, KeyError)

    def test_denied_secret(self, store: StoreUnderTest) -> None:
        if store.denied is None:
            pytest.skip("the store has no access control of its own (StoreUnderTest.denied)")
        with store.enforce(), pytest.raises(AccessDenied) as info:
            store.resolver.resolve(store.denied)
        assert isinstance(info.value, PermissionError)

    def test_values_never_shown(
        self, store: StoreUnderTest, caplog: pytest.LogCaptureFixture
    ) -> None:
        value = _value()
        ref = store.put(
            {"username": "u-" + secrets.token_hex(4), "password": value}
            if self._multi(store)
            else {"value": value}
        )
        field = "#password" if self._multi(store) else ""
        secret = store.resolver.get(ref)
        for text in (repr(secret), str(secret), f"{secret}", f"{secret:>10}"):
            assert value not in text
        with pytest.raises(TypeError):
            pickle.dumps(secret)
        resolved = store.resolver.resolve(ref + field)
        with caplog.at_level(logging.INFO):
            logging.getLogger("conformance.child").info("value is %s", resolved)
        assert value not in caplog.text and "***" in caplog.text

    def test_single_flight(self, store: StoreUnderTest) -> None:
        ref = store.put(
            {"value": _value()} if not self._multi(store) else {"a": _value(), "b": _value()}
        )
        key = store.resolver.parse(ref).key
        barrier = threading.Barrier(16)
        errors: list[BaseException] = []

        def worker() -> None:
            barrier.wait()
            try:
                store.resolver.get(ref)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert store.resolver.requests[key] == 1

    def test_invalidate_reads_again(self, store: StoreUnderTest) -> None:
        first, second = _value(), _value()
        ref = store.put({"value": first})
        assert store.resolver.resolve(ref) == first
        store.put({"value": second}, ref=ref)
        assert store.resolver.resolve(ref) == first  # cached
        store.resolver.invalidate(ref)
        assert store.resolver.resolve(ref) == second

    def test_metadata(self, store: StoreUnderTest) -> None:
        ref = store.put({"value": _value()})
        meta = store.resolver.metadata(ref)
        assert isinstance(meta, SecretMetadata)
        assert meta.ref == store.resolver.parse(ref).key
