"""CI: `::add-mask::` under GitHub Actions, and Vault JWT login with the CI's identity token."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from leaseline import AccessDenied, Resolver
from leaseline._config import Config
from leaseline.masking import encoded_forms
from leaseline.runtime.ci import announce_masks, identity_token, mask_lines

from tests.runtime.conftest import cli_env
from tests.servers import OpenBao

LEASELINE = [sys.executable, "-m", "leaseline.cli"]


# -- ::add-mask:: ---------------------------------------------------------------------------------


def test_mask_lines_cover_encodings_lines_and_escape_percent() -> None:
    lines = mask_lines("ab%cd\nline-two\r\n")
    assert "::add-mask::line-two" in lines
    assert "::add-mask::ab%25cd" in lines  # the runner unescapes %25
    assert all("\n" not in line and "\r" not in line for line in lines)
    single = mask_lines("s3cr3t-value")
    assert {line.removeprefix("::add-mask::") for line in single} == encoded_forms("s3cr3t-value")


def test_announce_masks_only_under_github_actions() -> None:
    assert announce_masks(io.StringIO(), environ={"GITHUB_ACTIONS": "false"}) is False
    assert announce_masks(io.StringIO(), environ={}) is False


def _first_other(lines: list[str]) -> int:
    return next(
        (i for i, line in enumerate(lines) if not line.startswith("::add-mask::")), len(lines)
    )


def _kv(bao: OpenBao, value: str) -> str:
    path = f"ci/{secrets.token_hex(4)}"
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"value": value}, mount_point="secret"
    )
    return f"vault://secret/{path}#value"


def test_get_announces_every_form_before_printing(
    openbao: OpenBao, tmp_path: Path, canary: object
) -> None:
    value = canary.new()  # type: ignore[attr-defined]
    ref = _kv(openbao, value)
    env = cli_env(tmp_path, GITHUB_ACTIONS="true", **openbao.env())
    result = subprocess.run(
        [*LEASELINE, "get", ref], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    cut = _first_other(lines)
    assert set(mask_lines(value)) <= set(lines[:cut])
    assert lines[cut:] == [value]


def test_run_announces_before_the_child_can_print(
    openbao: OpenBao, tmp_path: Path, canary: object
) -> None:
    value = canary.new()  # type: ignore[attr-defined]
    ref = _kv(openbao, value)
    env = cli_env(tmp_path, GITHUB_ACTIONS="true", **openbao.env())
    script = "import os,base64;v=os.environ['S'];print('v', v);print('b', base64.b64encode(v.encode()).decode())"
    result = subprocess.run(
        [*LEASELINE, "run", "--env", f"S={ref}", "--", sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    cut = _first_other(lines)
    assert set(mask_lines(value)) <= set(lines[:cut])
    assert lines[cut:] == ["v ***", "b ***"]  # the stream masker still masks the child


def test_no_announcement_outside_github_actions(
    openbao: OpenBao, tmp_path: Path, canary: object
) -> None:
    value = canary.new()  # type: ignore[attr-defined]
    env = cli_env(tmp_path, **openbao.env())
    result = subprocess.run(
        [*LEASELINE, "get", _kv(openbao, value)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [value]


# -- CI identity tokens ---------------------------------------------------------------------------


class _TokenServer:
    """GitHub's OIDC token endpoint, on loopback: GET ?audience=... with a bearer -> {value}."""

    def __init__(self, jwt: str, bearer: str) -> None:
        self.jwt, self.bearer = jwt, bearer
        self.requests: list[dict[str, object]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                ok = self.headers.get("Authorization") == f"bearer {owner.bearer}"
                owner.requests.append({"audience": query.get("audience"), "authorized": ok})
                body = json.dumps({"value": owner.jwt} if ok else {"message": "no"}).encode()
                self.send_response(200 if ok else 403)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/_apis/token?api-version=2.0"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def no_vault_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_", "ACTIONS_", "GITHUB_", "CI_JOB_JWT")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.vault-token either


@pytest.fixture
def github_oidc(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> Iterator[_TokenServer]:
    assert openbao.seeds is not None
    server = _TokenServer(
        openbao.seeds.mint_jwt(sub="repo:ml/train:ref:main"), secrets.token_hex(16)
    )
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", server.url)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", server.bearer)
    try:
        yield server
    finally:
        server.close()


def _ci_resolver(bao: OpenBao, **auth: str) -> Resolver:
    store = {"addr": bao.addr, "auth": {"method": "ci", "role": "leaseline-ci", **auth}}
    return Resolver(Config.from_mapping({"stores": {"vault": store}}), handle_signals=False)


@pytest.mark.usefixtures("no_vault_token")
def test_github_oidc_login_needs_no_vault_token(
    openbao: OpenBao, github_oidc: _TokenServer, canary: object
) -> None:
    value = canary.new()  # type: ignore[attr-defined]
    ref = _kv(openbao, value)
    assert "VAULT_TOKEN" not in os.environ
    with _ci_resolver(openbao, audience="leaseline") as r:
        assert r.resolve(ref) == value
    assert github_oidc.requests == [{"audience": ["leaseline"], "authorized": True}]


@pytest.mark.usefixtures("no_vault_token")
def test_gitlab_id_token_login(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, canary: object
) -> None:
    assert openbao.seeds is not None
    value = canary.new()  # type: ignore[attr-defined]
    ref = _kv(openbao, value)
    monkeypatch.setenv("VAULT_ID_TOKEN", openbao.seeds.mint_jwt(sub="project_path:ml/train"))
    with _ci_resolver(openbao) as r:
        assert r.resolve(ref) == value


@pytest.mark.usefixtures("no_vault_token")
def test_wrong_audience_is_refused(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    assert openbao.seeds is not None
    monkeypatch.setenv("MY_JWT", openbao.seeds.mint_jwt(aud="someone-else"))
    with _ci_resolver(openbao, token_env="MY_JWT") as r, pytest.raises(AccessDenied):
        r.resolve(_kv(openbao, "not-a-canary-" + secrets.token_hex(4)))


@pytest.mark.usefixtures("no_vault_token")
def test_missing_ci_identity_says_what_to_configure() -> None:
    with pytest.raises(AccessDenied, match="id-token: write"):
        identity_token(environ={})
    with pytest.raises(AccessDenied, match="ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        identity_token(environ={"ACTIONS_ID_TOKEN_REQUEST_URL": "http://127.0.0.1:9/x"})


def test_cli_get_with_ci_auth_masks_the_identity_token(
    openbao: OpenBao, tmp_path: Path, canary: object
) -> None:
    assert openbao.seeds is not None
    value = canary.new()  # type: ignore[attr-defined]
    ref = _kv(openbao, value)
    config = tmp_path / "leaseline.toml"
    config.write_text(
        f'[stores.vault]\naddr = "{openbao.addr}"\nauth = {{ method = "ci", role = "leaseline-ci" }}\n'
    )
    jwt = openbao.seeds.mint_jwt()
    env = cli_env(tmp_path, GITHUB_ACTIONS="true", VAULT_ID_TOKEN=jwt, LEASELINE_CONFIG=str(config))
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [*LEASELINE, "get", ref], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    cut = _first_other(lines)
    assert f"::add-mask::{jwt}" in lines[:cut]
    assert set(mask_lines(value)) <= set(lines[:cut])
    assert lines[cut:] == [value]
    assert base64.b64encode(value.encode()).decode() not in result.stderr


def test_run_keeps_the_ci_identity_out_of_the_child(
    openbao: OpenBao, tmp_path: Path, canary: object
) -> None:
    """Logged in with the job's OIDC identity, ``leaseline run`` hands the child neither the bearer
    that mints identity tokens (``ACTIONS_ID_TOKEN_REQUEST_TOKEN``) nor a token it got."""
    assert openbao.seeds is not None
    value = canary.new()  # type: ignore[attr-defined]
    ref = _kv(openbao, value)
    config = tmp_path / "leaseline.toml"
    config.write_text(
        f'[stores.vault]\naddr = "{openbao.addr}"\n'
        'auth = { method = "ci", role = "leaseline-ci", audience = "leaseline" }\n'
    )
    gitlab_jwt = openbao.seeds.mint_jwt(sub="project_path:ml/train")
    server = _TokenServer(openbao.seeds.mint_jwt(sub="repo:ml/train:ref:main"), canary.new())  # type: ignore[attr-defined]
    env = cli_env(
        tmp_path,
        LEASELINE_CONFIG=str(config),
        ACTIONS_ID_TOKEN_REQUEST_URL=server.url,
        ACTIONS_ID_TOKEN_REQUEST_TOKEN=server.bearer,
        JOB_JWT_COPY=server.jwt,  # the identity token, saved by an earlier step
        VAULT_ID_TOKEN=gitlab_jwt,  # not used for the login (GitHub's endpoint wins): passed on
    )
    env["HOME"] = str(tmp_path)
    try:
        result = subprocess.run(
            [*LEASELINE, "run", "--env", f"V={ref}", "--", sys.executable, "-c",
             "import json, os; print(json.dumps(dict(os.environ)))"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    child = json.loads(result.stdout.splitlines()[-1])
    assert server.requests and all(r["authorized"] for r in server.requests)
    assert "ACTIONS_ID_TOKEN_REQUEST_TOKEN" not in child
    assert "JOB_JWT_COPY" not in child
    assert server.bearer not in result.stdout and server.jwt not in result.stdout
    assert child["V"] == "***"  # masked on its way out; the child itself got the value
