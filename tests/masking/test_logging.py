"""Values in the places a log pipeline shows besides the message (issue 18 item 6): ``extra=``
fields, warnings, and the frame locals a traceback formatter prints. Against the real OpenBao."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from leaseline import Resolver
from leaseline._config import Config
from leaseline.runtime.render import Output, Renderer

from tests.servers import OpenBao

pytestmark = pytest.mark.integration

PLAIN = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "taskName"}


class JsonFormatter(logging.Formatter):
    """What python-json-logger and structlog's JSON renderer do: every extra field, as JSON."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in PLAIN}
        return json.dumps({"msg": record.getMessage(), **fields}, default=repr)


class Conn:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def __repr__(self) -> str:
        return f"Conn({self.dsn!r})"


def kv_value(openbao: OpenBao, canary: object) -> tuple[Resolver, str, str]:
    value = canary.new()  # type: ignore[attr-defined]
    path = f"masking/{os.urandom(3).hex()}"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"value": value}, mount_point="secret"
    )
    config = {"stores": {"vault": {"addr": openbao.addr, "token": openbao.root_token}}}
    return Resolver(Config.from_mapping(config)), f"vault://secret/{path}#value", value


def test_extra_fields_are_masked(openbao: OpenBao, canary: object) -> None:
    resolver, ref, _ = kv_value(openbao, canary)
    with resolver:
        v = resolver.resolve(ref)
        lines: list[str] = []
        handler = logging.Handler()
        handler.setFormatter(JsonFormatter())
        handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
        logger = logging.getLogger("tests.app.json")
        logger.addHandler(handler)
        try:
            logger.warning(
                "login",
                extra={
                    "password": v,
                    "ctx": {"dsn": f"pg://u:{v}@db", "tries": [1, v]},
                    "conn": Conn(f"pg://u:{v}@db"),
                    "user": "alice",
                },
            )
            logging.LoggerAdapter(logger, {"token": v}).warning("adapter")
        finally:
            logger.removeHandler(handler)
    first, second = (json.loads(line) for line in lines)
    assert first["password"] == "***"
    assert first["ctx"] == {"dsn": "pg://u:***@db", "tries": [1, "***"]}
    assert first["conn"] == "Conn('pg://u:***@db')"
    assert first["user"] == "alice"
    assert second["token"] == "***"


def _python(openbao: OpenBao, tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "LEASELINE_"))}
    (tmp_path / "none.toml").write_text("")
    env.update(openbao.env(), LEASELINE_CONFIG=str(tmp_path / "none.toml"))
    env["LEASELINE_LEDGER__PATH"] = str(tmp_path / "ledger.jsonl")
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("shown_by", ["default", "logging.captureWarnings"])
def test_warnings_are_masked(
    openbao: OpenBao, canary: object, tmp_path: Path, shown_by: str
) -> None:
    _, ref, value = kv_value(openbao, canary)
    script = (
        "import logging, sys, warnings, leaseline\n"
        f"v = leaseline.resolve({ref!r})\n"
        + (
            "logging.basicConfig(stream=sys.stderr, format='%(name)s: %(message)s')\n"
            "logging.captureWarnings(True)\n"
            if shown_by != "default"
            else ""
        )
        + "warnings.warn(f'retrying with {v}')\n"
    )
    result = _python(openbao, tmp_path, script)
    assert result.returncode == 0, result.stderr[-2000:].replace(value, "<value>")
    assert value not in result.stderr
    assert "UserWarning: retrying with ***" in result.stderr


def _locals_text(exc: BaseException) -> str:
    """The traceback as pytest --showlocals, Sentry or rich would show it: with frame locals
    (from the frame below this test's own, whose locals are the test's business)."""
    assert exc.__traceback__ is not None
    tb = exc.__traceback__.tb_next
    te = traceback.TracebackException(type(exc), exc, tb, capture_locals=True)
    return "".join(te.format())


def test_logged_traceback_shows_no_value_in_locals(
    openbao: OpenBao, canary: object, tmp_path: Path
) -> None:
    """A failed render (the destination is a directory) is logged with its traceback; the
    frames of leaseline's renderer held the rendered file's bytes in their locals."""
    resolver, ref, value = kv_value(openbao, canary)
    dest = tmp_path / "creds"
    (dest / "occupied").mkdir(parents=True)  # os.replace onto a non-empty directory fails
    with resolver:
        try:
            Renderer(resolver, [Output.file(dest, ref)]).render()
        except OSError as exc:
            logging.getLogger("tests.app").error("render failed", exc_info=True)
            text = _locals_text(exc)
        else:
            raise AssertionError("the render did not fail")
    assert "atomic_write" in text and "data = " not in text
    assert value not in text


def test_caught_traceback_shows_no_value_in_locals(
    openbao: OpenBao, canary: object, tmp_path: Path
) -> None:
    """The caller catches the error and hands it to an error reporter without logging it
    (``sentry_sdk.capture_exception``): the frames it left still show no value."""
    resolver, ref, value = kv_value(openbao, canary)
    dest = tmp_path / "creds"
    (dest / "occupied").mkdir(parents=True)
    with resolver:
        try:
            Renderer(resolver, [Output.file(dest, ref)]).render()
        except OSError as exc:
            text = _locals_text(exc)
        else:
            raise AssertionError("the render did not fail")
    assert "atomic_write" in text
    assert value not in text


def test_uncaught_traceback_shows_no_value_in_locals(
    openbao: OpenBao, canary: object, tmp_path: Path
) -> None:
    """An error reporter installed as ``sys.excepthook`` (Sentry's) sees no value in locals."""
    _, ref, value = kv_value(openbao, canary)
    dest = tmp_path / "creds"
    (dest / "occupied").mkdir(parents=True)
    script = (
        "import sys, traceback\n"
        "def report(kind, exc, tb):\n"
        "    te = traceback.TracebackException(kind, exc, tb, capture_locals=True)\n"
        "    sys.stdout.write(''.join(te.format()))\n"
        "sys.excepthook = report\n"
        "import leaseline\n"
        "from leaseline.runtime.render import Output, Renderer\n"
        "r = leaseline.default_resolver()\n"
        f"Renderer(r, [Output.file({str(dest)!r}, {ref!r})]).render()\n"
    )
    result = _python(openbao, tmp_path, script)
    assert result.returncode == 1
    assert "IsADirectoryError" in result.stdout or "OSError" in result.stdout, result.stderr
    assert "atomic_write" in result.stdout
    assert value not in result.stdout


def test_login_and_child_tokens_are_masked(openbao: OpenBao, canary: object) -> None:
    """Every token leaseline holds is registered with the masker: the login token, and the
    per-task child token it creates (read from the backend: it is never handed out)."""
    from leaseline import masking

    from tests.cli.test_run import canary_token

    token = canary_token(openbao, canary)
    path = f"masking/{os.urandom(3).hex()}"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path,
        secret={"value": canary.new()},
        mount_point="secret",  # type: ignore[attr-defined]
    )
    config = {"stores": {"vault": {"addr": openbao.addr, "token": token}}}
    with Resolver(Config.from_mapping(config)) as resolver:
        resolver.resolve(f"vault://secret/{path}#value")
        child = resolver.backend("vault")._child  # type: ignore[attr-defined]
        assert child and child != token
        assert masking.masker().mask(f"login {token} child {child}") == "login *** child ***"


def test_masking_filter_masks_extra_fields_of_handlers_you_attach_it_to() -> None:
    from leaseline.masking import Masker, MaskingFilter

    m = Masker()
    value = "s3cr3t-" + os.urandom(8).hex()
    m.add(value)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "login %s", (value,), None)
    record.password = value
    record.ctx = {"dsn": f"pg://u:{value}@db"}
    record.user = "alice"
    assert MaskingFilter(m).filter(record)
    assert (record.getMessage(), record.password, record.ctx, record.user) == (
        "login ***",
        "***",
        {"dsn": "pg://u:***@db"},
        "alice",
    )
