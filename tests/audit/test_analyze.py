"""`leaseline audit analyze`: rules over synthetic records, and over a real OpenBao audit log."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from click.testing import CliRunner
from leaseline.audit import Auditor, FileSink
from leaseline.audit._analyze import Settings, analyze
from leaseline.audit._readers import Access, parse_time, read_accesses
from leaseline.cli.audit import audit
from requests.adapters import HTTPAdapter

from tests.servers import OpenBao

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Berlin


@pytest.fixture(autouse=True)
def _no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "leaseline.toml"
    config.write_text("")
    monkeypatch.setenv("LEASELINE_CONFIG", str(config))
    for name in ("LEASELINE_AUDIT__SINK", "LEASELINE_AUDIT__HMAC_KEY"):
        monkeypatch.delenv(name, raising=False)
    return config


def access(
    seconds: float,
    identity: str = "trainer",
    secret: str = "secret/data/llm",
    address: str = "10.0.0.5",
    outcome: str = "ok",
    count: int = 1,
) -> Access:
    return Access(
        T0 + dt.timedelta(seconds=seconds),
        "test",
        identity,
        secret,
        address,
        outcome,
        "read",
        count,
    )


def normal_day() -> list[Access]:
    """Every 2 minutes for 8 hours, two secrets, one address: quiet, regular traffic."""
    out = []
    for i in range(240):
        out.append(access(i * 120, secret="secret/data/llm"))
        out.append(access(i * 120 + 30, secret="secret/data/db"))
    return out


def rules(alerts: list[Any]) -> list[tuple[str, str, str | None]]:
    return sorted((a.rule, a.identity, a.secret or a.address) for a in alerts)


BERLIN = Settings.from_table({"business_hours": "08:00-19:00", "timezone": "Europe/Berlin"})


def test_normal_traffic_raises_nothing() -> None:
    assert analyze(normal_day(), BERLIN) == []


def test_each_rule_fires_on_its_pattern() -> None:
    day = normal_day()
    burst = [access(3 * 3600 + i, address="203.0.113.9") for i in range(50)]  # 12:00 Berlin
    night = [access(13 * 3600, identity="trainer")]  # 23:00 Berlin (22:00 UTC + 1h)
    denied = [access(4 * 3600 + i, outcome="denied", secret="secret/data/admin") for i in range(6)]
    alerts = analyze(day + burst + night + denied, BERLIN)
    assert rules(alerts) == [
        ("denial_burst", "trainer", None),
        ("new_source", "trainer", "203.0.113.9"),
        ("off_hours", "trainer", None),
        ("spike", "trainer", "secret/data/llm"),
    ]
    spike = next(a for a in alerts if a.rule == "spike")
    assert spike.severity == "high" and spike.count >= 50
    off = next(a for a in alerts if a.rule == "off_hours")
    assert off.count == 1 and "08:00:00-19:00:00 Europe/Berlin" in off.message


def test_allowed_networks_replace_first_seen_for_outsiders() -> None:
    s = Settings.from_table({"allowed_networks": ["10.0.0.0/8"]})
    alerts = analyze([*normal_day(), access(10, address="198.51.100.7")], s)
    assert [(a.rule, a.severity, a.address) for a in alerts] == [
        ("disallowed_network", "high", "198.51.100.7")
    ]


def test_known_sources_count_as_seen() -> None:
    s = Settings.from_table({"known_sources": {"trainer": ["10.0.0.6"]}})
    assert analyze([access(0, address="10.0.0.6")], s) == []
    # with known sources, even the identity's first access from elsewhere is new
    assert [a.address for a in analyze([access(0)], s)] == ["10.0.0.5"]


def test_business_days_and_a_window_over_midnight() -> None:
    night_shift = Settings.from_table({"business_hours": "22:00-06:00", "business_days": ["mon"]})
    monday_23 = access(14 * 3600)  # Mon 23:00 UTC
    tuesday_03 = access(18 * 3600)  # Tue 03:00 UTC: still Monday's shift
    tuesday_23 = access(38 * 3600)  # Tue 23:00 UTC: Tuesday is not a business day
    alerts = analyze([monday_23, tuesday_03, tuesday_23], night_shift)
    assert [(a.rule, a.first) for a in alerts] == [("off_hours", tuesday_23.time)]


def test_cache_hit_counts_weigh_in_spikes() -> None:
    hits = access(3 * 3600, count=500)
    alerts = analyze([*normal_day(), hits], Settings())
    assert rules(alerts) == [("spike", "trainer", "secret/data/llm")]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"business_hours": "8-19"}, "business_hours: expected HH:MM"),
        ({"business_hours": "08:00"}, "expected 'HH:MM-HH:MM'"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"allowed_networks": ["10.0.0.0/33"]}, "not a network"),
        ({"business_days": ["someday"]}, "not a weekday"),
    ],
)
def test_bad_settings_are_named(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_table(table)


def test_parse_time_handles_nanoseconds_and_offsets() -> None:
    assert parse_time("2025-03-03T09:00:00.123456789Z") == T0.replace(microsecond=123456)
    assert parse_time("2025-03-03T10:00:00+01:00") == T0


def test_cloudtrail_and_leaseline_logs_are_read(tmp_path: Path) -> None:
    trail = {
        "Records": [
            {
                "eventTime": "2025-03-03T09:00:00Z",
                "eventSource": "secretsmanager.amazonaws.com",
                "eventName": "GetSecretValue",
                "sourceIPAddress": "10.0.0.5",
                "userIdentity": {"arn": "arn:aws:sts::123456789012:assumed-role/train/i-1"},
                "requestParameters": {"secretId": "prod/openai"},
            },
            {
                "eventTime": "2025-03-03T09:00:01Z",
                "eventSource": "secretsmanager.amazonaws.com",
                "eventName": "GetSecretValue",
                "sourceIPAddress": "10.0.0.5",
                "userIdentity": {"arn": "arn:aws:sts::123456789012:assumed-role/train/i-1"},
                "requestParameters": {"secretId": "prod/admin"},
                "errorCode": "AccessDeniedException",
            },
        ]
    }
    ct = tmp_path / "cloudtrail.json"
    ct.write_text(json.dumps(trail))
    own = tmp_path / "audit.jsonl"
    auditor = Auditor(FileSink(own))
    auditor.emit("read", ref="vault://secret/llm", store="vault", source="10.1.1.1")
    auditor.emit(
        "cache_hits", ref="vault://secret/llm", store="vault", source="10.1.1.1", extra={"count": 7}
    )
    auditor.close()
    got = read_accesses([ct, own])
    assert [(a.origin, a.secret, a.outcome, a.count, a.address) for a in got[:2]] == [
        ("cloudtrail", "prod/openai", "ok", 1, "10.0.0.5"),
        ("cloudtrail", "prod/admin", "denied", 1, "10.0.0.5"),
    ]
    assert got[0].identity.endswith("assumed-role/train/i-1")
    mine = [a for a in got if a.origin == "leaseline"]
    assert [(a.secret, a.count, a.address) for a in mine] == [
        ("vault://secret/llm", 1, "10.1.1.1"),
        ("vault://secret/llm", 7, "10.1.1.1"),
    ]


def test_cli_formats_and_exit_codes(tmp_path: Path, _no_config_file: Path) -> None:
    log = tmp_path / "records.jsonl"
    records = [*normal_day(), access(100, address="198.51.100.7")]
    log.write_text(
        "\n".join(
            json.dumps(
                {
                    "eventTime": a.time.isoformat(),
                    "eventSource": "secretsmanager.amazonaws.com",
                    "eventName": "GetSecretValue",
                    "sourceIPAddress": a.address,
                    "userIdentity": {"arn": a.identity},
                    "requestParameters": {"secretId": a.secret},
                }
            )
            for a in records
        )
    )
    runner = CliRunner()
    result = runner.invoke(audit, ["analyze", "--format", "json", str(log)])
    assert result.exit_code == 1
    (alert,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert alert["rule"] == "new_source" and alert["severity"] == "medium"
    # exit code by severity: a medium alert does not fail --fail-on high
    assert runner.invoke(audit, ["analyze", "--fail-on", "high", str(log)]).exit_code == 0
    table = runner.invoke(audit, ["analyze", str(log)])
    assert table.exit_code == 1 and "new_source" in table.stdout and "198.51.100.7" in table.stdout
    # [audit.analyze] in the config file
    _no_config_file.write_text('[audit.analyze]\nallowed_networks = ["10.0.0.0/8"]\n')
    result = runner.invoke(audit, ["analyze", "--format", "json", str(log)])
    assert [json.loads(x)["rule"] for x in result.stdout.splitlines()] == ["disallowed_network"]
    assert runner.invoke(audit, ["analyze", str(tmp_path / "nope")]).exit_code == 2
    bad = runner.invoke(audit, ["analyze", "--business-hours", "soon", str(log)])
    assert bad.exit_code == 2 and "business_hours" in bad.output


# -- against a real OpenBao -------------------------------------------------------------------


class _From(HTTPAdapter):
    """Connect from a given local address (Linux routes all of 127/8 to loopback)."""

    def __init__(self, source: str) -> None:
        self._source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


def client_from(source: str, token: str) -> requests.Session:
    s = requests.Session()
    s.mount("http://", _From(source))
    s.headers["X-Vault-Token"] = token
    return s


def read_log_from(bao: OpenBao, offset: int, until: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + until
    with bao.audit_log.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    while not data.endswith(b"\n") and time.monotonic() < deadline:
        time.sleep(0.1)
        with bao.audit_log.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_openbao_off_hours_burst_from_a_new_address(openbao: OpenBao, tmp_path: Path) -> None:
    root = openbao.client()
    tag = secrets.token_hex(4)
    root.sys.create_or_update_policy(
        name=f"audit-{tag}",
        policy=f'path "secret/data/audit-{tag}/*" {{ capabilities = ["read"] }}',
    )
    for name in ("llm", "db"):
        root.secrets.kv.v2.create_or_update_secret(
            path=f"audit-{tag}/{name}", secret={"v": secrets.token_hex(8)}, mount_point="secret"
        )
    token = root.auth.token.create(
        policies=[f"audit-{tag}"], display_name=f"trainer-{tag}", ttl="1h"
    )["auth"]["client_token"]
    time.sleep(0.3)
    offset = openbao.audit_log.stat().st_size

    usual = client_from("127.0.0.1", token)
    for i in range(12):  # normal traffic: two secrets, one address, every half second
        name = ("llm", "db")[i % 2]
        assert usual.get(f"{openbao.addr}/v1/secret/data/audit-{tag}/{name}").ok
        time.sleep(0.5)
    time.sleep(1.0)
    cut = time.time()
    time.sleep(1.2)
    intruder = client_from("127.0.0.2", token)
    for _ in range(60):  # the burst: one secret, hammered, from an address never seen
        assert intruder.get(f"{openbao.addr}/v1/secret/data/audit-{tag}/llm").ok
    for _ in range(8):  # and probing where the token may not go
        assert intruder.get(f"{openbao.addr}/v1/secret/data/admin/root-{tag}").status_code == 403
    time.sleep(0.5)

    lines = read_log_from(openbao, offset)
    cut_at = dt.datetime.fromtimestamp(cut, UTC)
    normal = [x for x in lines if parse_time(x["time"]) < cut_at]
    assert any(x.get("request", {}).get("remote_address") == "127.0.0.2" for x in lines)
    assert not any(x.get("request", {}).get("remote_address") == "127.0.0.2" for x in normal)
    (tmp_path / "all.log").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "normal.log").write_text("".join(json.dumps(x) + "\n" for x in normal))

    # business hours end at the cut, in Berlin time: the normal traffic was inside, the burst not
    berlin = dt.datetime.fromtimestamp(cut, ZoneInfo("Europe/Berlin"))
    hours = f"{(berlin - dt.timedelta(hours=1)):%H:%M:%S}-{berlin:%H:%M:%S}"
    config = tmp_path / "leaseline.toml"
    config.write_text(
        "[audit.analyze]\n"
        f'business_hours = "{hours}"\n'
        'timezone = "Europe/Berlin"\n'
        'business_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
        'spike_bucket = "1s"\n'
    )
    env = {"LEASELINE_CONFIG": str(config), "PATH": "/usr/bin:/bin"}

    def run(log: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "leaseline.cli", "audit", "analyze", "--format", "json", log],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    quiet = run(str(tmp_path / "normal.log"))
    assert (quiet.returncode, quiet.stdout) == (0, ""), quiet.stderr

    loud = run(str(tmp_path / "all.log"))
    assert loud.returncode == 1, loud.stderr
    alerts = [json.loads(line) for line in loud.stdout.splitlines()]
    who = f"token-trainer-{tag}"
    assert sorted((a["rule"], a["identity"], a["secret"], a["address"]) for a in alerts) == [
        ("denial_burst", who, None, None),
        ("new_source", who, None, "127.0.0.2"),
        ("off_hours", who, None, None),
        ("spike", who, f"secret/data/audit-{tag}/llm", None),
    ]
    by_rule = {a["rule"]: a for a in alerts}
    assert by_rule["new_source"]["count"] == 68
    assert by_rule["off_hours"]["count"] == 68
    assert by_rule["denial_burst"]["count"] == 8
    assert token not in loud.stdout + quiet.stdout
