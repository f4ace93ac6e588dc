"""The shipped conformance suite (``leaseline.testing``) against every store type of
``leaseline.backends``: vault (KV v2 and v1, real OpenBao), aws-sm and aws-ssm (moto's server),
azure-kv (the real SDK against the local HTTPS fake of the REST API: no emulator is installable),
env, file (the real filesystem) and memory.

What a store cannot do (no access control for ``env``, single values for SSM and ``env``) is said
by the store's :class:`StoreUnderTest`; no class here overrides or skips a test of the suite.
"""

# ruff: noqa: F811  (fixtures imported from the store test modules are parameters here)

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from leaseline import Resolver
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend
from leaseline.testing import BackendConformance, StoreUnderTest

from tests.backends.test_aws import (  # noqa: F401  (fixtures)
    denied_profile,
    iam_enforced,
    make_resolver,
    unique,
)
from tests.backends.test_azure import VAULT, fake_kv, kv, kv_resolver, putter  # noqa: F401
from tests.backends.test_vault import _putter, approle, vault_resolver
from tests.servers import MotoServer, OpenBao
from tests.servers.azure_kv import FakeKeyVault

STORE_TYPES = {"vault", "aws-sm", "aws-ssm", "azure-kv", "env", "file", "memory"}


# -- vault ---------------------------------------------------------------------------------------


class TestVaultKvV2(BackendConformance):
    @pytest.fixture
    def store(self, openbao: OpenBao) -> Iterator[StoreUnderTest]:
        resolver = vault_resolver(openbao, approle(openbao))
        yield StoreUnderTest(
            resolver,
            _putter(openbao, "secret", True),
            missing="vault://secret/conf/absent-" + secrets.token_hex(4),
            denied="vault://cubbyhole-denied/x",
        )
        resolver.close()


class TestVaultKvV1(BackendConformance):
    @pytest.fixture
    def store(self, openbao: OpenBao) -> Iterator[StoreUnderTest]:
        resolver = vault_resolver(openbao, approle(openbao))
        yield StoreUnderTest(
            resolver,
            _putter(openbao, "kv1", False),
            missing="vault://kv1/conf/absent-" + secrets.token_hex(4),
            denied="vault://sys/policies/acl/root",
        )
        resolver.close()


# -- aws -----------------------------------------------------------------------------------------


class TestSecretsManager(BackendConformance):
    @pytest.fixture
    def store(
        self, aws_env: MotoServer, make_resolver: Callable[..., Resolver], denied_profile: str
    ) -> StoreUnderTest:
        client = aws_env.client("secretsmanager")

        def put(fields: dict[str, str], ref: str | None = None) -> str:
            body = json.dumps(fields)
            if ref is None:
                name = unique("conformance")
                client.create_secret(Name=name, SecretString=body)
                return f"aws-sm://{name}"
            client.put_secret_value(SecretId=ref.removeprefix("aws-sm://"), SecretString=body)
            return ref

        denied = unique("denied")
        client.create_secret(Name=denied, SecretString=json.dumps({"value": "x"}))
        resolver = make_resolver({"sm-denied": {"type": "aws-sm", "profile": denied_profile}})
        return StoreUnderTest(
            resolver=resolver,
            put=put,
            missing=f"aws-sm://{unique('missing')}",
            denied=f"sm-denied://{denied}",
            enforce=lambda: iam_enforced(aws_env),
        )


class TestParameterStore(BackendConformance):
    @pytest.fixture
    def store(
        self, aws_env: MotoServer, make_resolver: Callable[..., Resolver], denied_profile: str
    ) -> StoreUnderTest:
        client = aws_env.client("ssm")

        def put(fields: dict[str, str], ref: str | None = None) -> str:
            (value,) = fields.values()
            name = "/" + unique("conformance") if ref is None else ref.removeprefix("aws-ssm://")
            client.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
            return f"aws-ssm://{name}"

        denied = "/" + unique("denied")
        client.put_parameter(Name=denied, Value="x", Type="SecureString")
        resolver = make_resolver({"ssm-denied": {"type": "aws-ssm", "profile": denied_profile}})
        return StoreUnderTest(
            resolver=resolver,
            put=put,
            missing=f"aws-ssm:///{unique('missing')}",
            denied=f"ssm-denied://{denied}",
            enforce=lambda: iam_enforced(aws_env),
            multi_field=False,
        )


# -- azure ---------------------------------------------------------------------------------------


class TestKeyVault(BackendConformance):
    @pytest.fixture
    def store(self, kv: FakeKeyVault) -> Iterator[StoreUnderTest]:
        denied = "s-" + secrets.token_hex(6)
        kv.deny(VAULT, denied)
        resolver = kv_resolver(kv)
        yield StoreUnderTest(
            resolver,
            putter(kv),
            missing=f"kv://{VAULT}/absent-{secrets.token_hex(4)}",
            denied=f"kv://{VAULT}/{denied}",
        )
        resolver.close()


# -- env, file, memory ---------------------------------------------------------------------------


class TestEnv(BackendConformance):
    @pytest.fixture
    def store(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreUnderTest]:
        prefix = f"CONF_{secrets.token_hex(3).upper()}_"

        def put(fields: dict[str, str], ref: str | None = None) -> str:
            (value,) = fields.values()
            name = ref.removeprefix("conf-env://") if ref else f"V{secrets.token_hex(4).upper()}"
            monkeypatch.setenv(prefix + name, value)
            return f"conf-env://{name}"

        config = {"stores": {"conf-env": {"type": "env", "prefix": prefix}}}
        resolver = Resolver(Config.from_mapping(config), handle_signals=False)
        yield StoreUnderTest(
            resolver,
            put,
            missing="conf-env://ABSENT",
            denied=None,  # the process can read its whole environment: no access control
            multi_field=False,
        )
        resolver.close()


class TestFile(BackendConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[StoreUnderTest]:
        root, outside = tmp_path / "secrets", tmp_path / "outside"
        root.mkdir()
        outside.mkdir()
        (outside / "key.json").write_text(json.dumps({"value": "x"}))

        def put(fields: dict[str, str], ref: str | None = None) -> str:
            path = (
                Path(ref.removeprefix("file://")) if ref else root / f"{secrets.token_hex(4)}.json"
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(fields))
            os.replace(tmp, path)  # as a CSI driver swaps a file: a new inode
            return f"file://{path}"

        # static secrets are cached until refresh_after (2 s by default): long enough to see
        config = {"stores": {"file": {"roots": [str(root)], "refresh_after": "1h"}}}
        resolver = Resolver(Config.from_mapping(config), handle_signals=False)
        yield StoreUnderTest(
            resolver,
            put,
            missing=f"file://{root}/absent.json",
            denied=f"file://{outside}/key.json",  # outside the allowed roots
        )
        resolver.close()


class TestMemory(BackendConformance):
    @pytest.fixture
    def store(self) -> Iterator[StoreUnderTest]:
        name = f"conf-mem-{secrets.token_hex(3)}"

        def put(fields: dict[str, str], ref: str | None = None) -> str:
            locator = ref.removeprefix(f"{name}://") if ref else f"s/{secrets.token_hex(4)}"
            MemoryBackend.put(name, locator, fields)
            return f"{name}://{locator}"

        MemoryBackend.put(name, "denied", {"value": "x"}, denied=True)
        config = {"stores": {name: {"type": "memory"}}}
        resolver = Resolver(Config.from_mapping(config), handle_signals=False)
        yield StoreUnderTest(resolver, put, missing=f"{name}://absent", denied=f"{name}://denied")
        resolver.close()
        MemoryBackend.reset(name)


def test_every_store_type_runs_the_suite() -> None:
    from leaseline._registry import BUILTIN

    covered = {
        "vault": TestVaultKvV2,
        "aws-sm": TestSecretsManager,
        "aws-ssm": TestParameterStore,
        "azure-kv": TestKeyVault,
        "env": TestEnv,
        "file": TestFile,
        "memory": TestMemory,
    }
    # aws-sts issues credentials from a role: it has no secrets to put, read back or deny
    assert set(BUILTIN) - {"aws-sts"} == set(covered) == STORE_TYPES
    assert all(issubclass(cls, BackendConformance) for cls in covered.values())
