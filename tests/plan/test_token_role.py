"""``leaseline plan --apply`` writes the token role per-stage child tokens are made with."""

from __future__ import annotations

import secrets

from leaseline.plan._server import Vault, worker_policy

from tests.servers import OpenBao


def test_the_role_allows_every_applied_policy_renewable_and_not_orphan(openbao: OpenBao) -> None:
    role = f"leaseline-{secrets.token_hex(4)}"
    vault = Vault(openbao.addr, openbao.root_token)
    assert vault.read_token_role(role) is None
    assert vault.write_token_role(role, ["leaseline-a-x"]) == ["leaseline-a-x"]
    # a second pipeline applied later keeps the first one's stages
    assert vault.write_token_role(role, ["leaseline-b-y"]) == ["leaseline-a-x", "leaseline-b-y"]
    data = openbao.client().read(f"auth/token/roles/{role}")["data"]
    assert sorted(data["allowed_policies"]) == ["leaseline-a-x", "leaseline-b-y"]
    assert data["orphan"] is False and data["renewable"] is True


def test_the_worker_policy_lets_a_login_mint_stage_tokens_and_read_nothing(
    openbao: OpenBao,
) -> None:
    role = f"leaseline-{secrets.token_hex(4)}"
    Vault(openbao.addr, openbao.root_token).write_token_role(role, ["leaseline-a-x"])
    worker = openbao.client(openbao.token_with_policy(worker_policy(role)))
    made = worker.auth.token.create(role_name=role, policies=["leaseline-a-x"], ttl="60s")
    assert sorted(made["auth"]["policies"]) == ["default", "leaseline-a-x"]
    answer = worker.write("sys/capabilities-self", paths=["secret/data/anything"])
    assert answer["data"]["secret/data/anything"] == ["deny"]  # the login reads nothing itself
