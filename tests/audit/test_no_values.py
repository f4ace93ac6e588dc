"""No value and no unhashed token in any audit line, against the real OpenBao (canary plugin).

The Vault token itself is a canary here (root may choose a token's id), so the plugin fails the
test if it shows up in the audit trail (tmp_path), OpenBao's own audit log, or any output.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from leaseline import AccessDenied, Resolver
from leaseline._config import Config

from tests.audit.conftest import events
from tests.servers import DatabaseEngine, OpenBao

TOKENISH = re.compile(r'"(?:s|hvs|hvb|b)\.[A-Za-z0-9]{20,}')


def test_values_and_tokens_never_reach_the_trail(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path, canary: Any
) -> None:
    root = openbao.client()
    tag = secrets.token_hex(4)
    root.sys.create_or_update_policy(
        name=f"audit-nv-{tag}",
        policy=(
            f'path "secret/data/nv-{tag}/*" {{ capabilities = ["read"] }}\n'
            f'path "{vault_db.creds_path()}" {{ capabilities = ["read"] }}\n'
            'path "sys/leases/*" { capabilities = ["update"] }\n'
            'path "auth/token/create" { capabilities = ["create", "update"] }\n'
        ),
    )
    token = canary.new("token")
    root.auth.token.create(id=token, policies=[f"audit-nv-{tag}"], ttl="1h")
    api_key = canary.new()
    root.secrets.kv.v2.create_or_update_secret(
        path=f"nv-{tag}/llm", secret={"api_key": api_key}, mount_point="secret"
    )
    log = tmp_path / "audit.jsonl"
    config = Config.from_mapping(
        {
            "stores": {"vault": {"addr": openbao.addr, "token": token}},
            "audit": {"sink": f"file://{log}", "hmac_key": secrets.token_hex(16)},
        }
    )
    with Resolver(config, handle_signals=False) as r:
        assert r.resolve(f"vault://secret/nv-{tag}/llm#api_key") == api_key
        with r.lease(f"vault://{vault_db.creds_path()}") as handle:
            password = handle.secret.reveal("password")
            username = handle.secret.reveal("username")
        with pytest.raises(AccessDenied):
            r.resolve(f"vault://secret/elsewhere-{tag}#x")
    text = log.read_text()
    kinds = {(e["event"], e["outcome"]) for e in events(log)}
    assert {
        ("read", "ok"),
        ("lease_issue", "ok"),
        ("lease_revoke", "ok"),
        ("read", "denied"),
    } <= kinds
    for secret in (api_key, password, username, token):
        assert secret not in text
    assert not TOKENISH.search(text)
    for record in events(log):
        if record["event"] in {"read", "lease_issue"} and record["outcome"] == "ok":
            hmacs = record["value_hmacs"]
            assert set(hmacs) == set(record["fields"])
            assert all(h.startswith("hmac-sha256:") for h in hmacs.values())
    json.dumps(events(log))  # every line parses
