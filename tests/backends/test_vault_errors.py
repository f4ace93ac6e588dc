"""What a denial says, against the real OpenBao: a token Vault does not accept is not a
missing capability, and a missing capability names the policy path Vault checks."""

from __future__ import annotations

import secrets

import pytest
from leaseline import AccessDenied, Resolver
from leaseline._config import Config

from tests.servers import OpenBao

pytestmark = pytest.mark.integration


def _resolver(bao: OpenBao, token: str) -> Resolver:
    return Resolver(Config.from_mapping({"stores": {"vault": {"addr": bao.addr, "token": token}}}))


def _put(bao: OpenBao, path: str) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"k": "v-" + secrets.token_hex(8)}, mount_point="secret"
    )


@pytest.mark.parametrize("how", ["invalid", "revoked"])
def test_a_token_vault_does_not_accept_is_reported_as_such(openbao: OpenBao, how: str) -> None:
    _put(openbao, "llm/tokencheck")
    if how == "invalid":
        token = "s." + secrets.token_urlsafe(18)
    else:
        token = openbao.token_with_policy('path "secret/*" { capabilities = ["read"] }')
        openbao.client().auth.token.revoke(token)
    with _resolver(openbao, token) as r, pytest.raises(AccessDenied) as info:
        r.resolve("vault://secret/llm/tokencheck#k")
    message = str(info.value)
    assert "does not accept the token (invalid, expired or revoked)" in message, message
    assert "needs 'read'" not in message
    assert token not in message


def test_a_missing_capability_names_the_kv2_policy_path(openbao: OpenBao) -> None:
    # no capability under secret/ at all: the mount cannot even be looked up
    _put(openbao, "llm/nocap")
    token = openbao.token_with_policy('path "database/creds/reader" { capabilities = ["read"] }')
    with _resolver(openbao, token) as r, pytest.raises(AccessDenied) as info:
        r.resolve("vault://secret/llm/nocap#k")
    message = str(info.value)
    assert "needs 'read'" in message
    assert '"secret/data/llm/nocap"' in message, message
    assert "does not accept the token" not in message
