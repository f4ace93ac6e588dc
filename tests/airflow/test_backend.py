"""``LeaselineBackend`` against the in-process ``memory`` store (unit tests, no servers)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
from leaseline.airflow import LeaselineBackend, get_provider_info
from leaseline.airflow._backend import close_resolvers, resolver_for
from leaseline.airflow._task import airflow_context, end_task
from leaseline.backends.memory import MemoryBackend, random_fields

from tests.canary import CanaryFixture


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh memory store and a config file naming it; resolvers closed afterwards."""
    name = f"mem-{secrets.token_hex(4)}"
    config = tmp_path / "leaseline.toml"
    config.write_text(
        f'[stores.{name}]\ntype = "memory"\n\n[resolver]\nnegative_ttl = "60s"\n', encoding="utf-8"
    )
    yield name, str(config)
    close_resolvers()
    MemoryBackend.reset(name)


@pytest.fixture
def in_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process looks like a task process (`dags test`'s in-process supervisor comms)."""
    from airflow.sdk.execution_time import task_runner
    from leaseline import masking

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", object(), raising=False)
    monkeypatch.setattr(masking, "mask_std_streams", lambda m=None: None)  # pytest owns stdout


def backend(config: str, **kwargs: Any) -> LeaselineBackend:
    return LeaselineBackend(config_file=config, **kwargs)


def airflow_redact(text: str) -> str:
    from airflow.sdk._shared.secrets_masker import redact

    return str(redact(text))


def test_variable_is_read_masked_and_cached(store: tuple[str, str], canary: CanaryFixture) -> None:
    name, config = store
    value = canary.new()
    MemoryBackend.put(name, "airflow/variables/llm_api_key", {"value": value})
    b = backend(config, variables_ref=f"{name}://airflow/variables/{{key}}")
    assert b.get_variable("llm_api_key") == value
    assert b.get_variable("llm_api_key") == value
    assert MemoryBackend.reads(name) == 1  # the second lookup is a cache hit
    # handed to Airflow's masker without a name: masked whatever the variable is called
    assert airflow_redact(f"key is {value}") == "key is ***"


def test_missing_returns_none_and_is_negative_cached(store: tuple[str, str]) -> None:
    name, config = store
    b = backend(config, variables_ref=f"{name}://airflow/variables/{{key}}")
    assert b.get_variable("absent") is None
    assert b.get_variable("absent") is None
    assert MemoryBackend.reads(name) == 1


def test_denied_raises_airflows_authoritative_deny(store: tuple[str, str]) -> None:
    name, config = store
    MemoryBackend.put(name, "airflow/variables/secret", {"value": "x" * 12}, denied=True)
    b = backend(config, variables_ref=f"{name}://airflow/variables/{{key}}")
    with pytest.raises(AirflowSecretsBackendAccessDenied, match="denied"):
        b.get_variable("secret")
    assert isinstance(AirflowSecretsBackendAccessDenied("x"), PermissionError)


def test_lookup_pattern_keeps_unrelated_keys_away_from_the_store(store: tuple[str, str]) -> None:
    name, config = store
    b = backend(
        config,
        variables_ref=f"{name}://airflow/variables/{{key}}",
        variables_lookup_pattern=r"^llm_",
        connections_ref=f"{name}://airflow/connections/{{conn_id}}",
        connections_lookup_pattern=r"^db_",
    )
    assert b.get_variable("other") is None
    assert b.get_conn_value("aws_default") is None
    assert MemoryBackend.reads(name) == 0


@pytest.mark.parametrize("key", ["a?version=1", "a#field", "../sys/x", "with space", ""])
def test_keys_cannot_steer_the_reference(store: tuple[str, str], key: str) -> None:
    name, config = store
    b = backend(config, variables_ref=f"{name}://airflow/variables/{{key}}")
    assert b.get_variable(key) is None
    assert MemoryBackend.reads(name) == 0


def test_no_template_means_not_here(store: tuple[str, str]) -> None:
    _, config = store
    b = backend(config)
    assert b.get_variable("x") is None
    assert b.get_conn_value("x") is None
    assert b.get_config("x") is None


def test_variable_field_forms(store: tuple[str, str], canary: CanaryFixture) -> None:
    name, config = store
    one, a, b_ = canary.new(), canary.new(), canary.new()
    MemoryBackend.put(name, "v/only", {"anything": one})
    MemoryBackend.put(name, "v/multi", {"a": a, "b": b_})
    b = backend(config, variables_ref=f"{name}://v/{{key}}")
    assert b.get_variable("only") == one
    assert json.loads(b.get_variable("multi") or "") == {"a": a, "b": b_}
    shared = backend(config, variables_ref=f"{name}://v/multi#{{key}}")  # one secret, many vars
    assert shared.get_variable("a") == a
    assert shared.get_variable("b") == b_


def test_config_values(store: tuple[str, str], canary: CanaryFixture) -> None:
    name, config = store
    value = canary.new()
    MemoryBackend.put(name, "airflow/config/sql_alchemy_conn", {"value": value})
    b = backend(config, config_ref=f"{name}://airflow/config/{{key}}")
    assert b.get_config("sql_alchemy_conn") == value


def test_connection_from_fields_of_a_secret(store: tuple[str, str], canary: CanaryFixture) -> None:
    name, config = store
    password = canary.new()
    MemoryBackend.put(
        name,
        "airflow/connections/db_main",
        {
            "conn_type": "postgres",
            "host": "db.internal",
            "port": "5432",
            "login": "etl",
            "password": password,
            "sslmode": "require",
        },
    )
    b = backend(config, connections_ref=f"{name}://airflow/connections/{{conn_id}}")
    conn = b.get_connection("db_main")
    assert conn is not None
    assert (conn.conn_type, conn.host, conn.port, conn.login) == (
        "postgres",
        "db.internal",
        5432,
        "etl",
    )
    assert conn.password == password
    assert conn.extra_dejson == {"sslmode": "require"}


def test_connection_from_a_uri(store: tuple[str, str], canary: CanaryFixture) -> None:
    name, config = store
    password = canary.new()
    MemoryBackend.put(name, "c/api", {"conn_uri": f"http://user:{password}@api.internal:8080"})
    b = backend(config, connections_ref=f"{name}://c/{{conn_id}}")
    conn = b.get_connection("api")
    assert conn is not None and conn.host == "api.internal" and conn.password == password


def test_explicit_connection_fields_share_one_dynamic_lease(
    store: tuple[str, str], in_task: None
) -> None:
    name, config = store
    MemoryBackend.put(
        name,
        "database/creds/etl",
        ttl=600,
        renewable=True,
        mint=random_fields("username", "password"),
    )
    b = backend(
        config,
        connections={
            "training_db": {
                "conn_type": "postgres",
                "host": "https://not-a-reference.example",  # a literal, not a store
                "port": 5432,
                "login": f"{name}://database/creds/etl#username",
                "password": f"{name}://database/creds/etl#password",
                "extra": {"sslmode": "disable"},
            }
        },
    )
    conn = b.get_connection("training_db")
    assert conn is not None
    assert conn.host == "https://not-a-reference.example"
    assert conn.login and conn.password and conn.login != conn.password
    assert MemoryBackend.reads(name) == 1  # login and password: one read, one lease
    assert len(MemoryBackend.live_leases(name)) == 1
    assert conn.extra_dejson == {"sslmode": "disable"}
    # both values reached Airflow's masker (Airflow alone would mask only the password)
    assert airflow_redact(f"{conn.login} {conn.password}") == "*** ***"
    end_task()  # what the task-end listener does
    assert MemoryBackend.live_leases(name) == []


def test_explicit_connection_as_one_reference(
    store: tuple[str, str], canary: CanaryFixture
) -> None:
    name, config = store
    password = canary.new()
    MemoryBackend.put(name, "c/uri", {"uri": f"postgres://u:{password}@h:1/db"})
    b = backend(config, connections={"pg": f"{name}://c/uri"})
    assert b.get_conn_value("pg") == f"postgres://u:{password}@h:1/db"
    assert b.get_conn_value("not_mapped") is None


def test_bad_arguments_fail_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"\{key\}"):
        LeaselineBackend(variables_ref="vault://secret/airflow/variables/fixed")
    with pytest.raises(ValueError, match="regular expression"):
        LeaselineBackend(variables_lookup_pattern="(")
    with pytest.raises(ValueError):
        LeaselineBackend(connections={"x": 42})  # type: ignore[dict-item]


def test_backend_instances_share_one_resolver(store: tuple[str, str]) -> None:
    _, config = store
    assert backend(config).resolver is backend(config).resolver is resolver_for(config)


def test_repr_shows_no_values(store: tuple[str, str]) -> None:
    name, config = store
    b = backend(config, connections={"db": {"password": f"{name}://x#password"}})
    assert "password" not in repr(b) and "db" in repr(b)


def test_audit_context_outside_a_task_is_empty() -> None:
    assert airflow_context() == {}


def test_provider_info_entry_point() -> None:
    found = [ep for ep in entry_points(group="apache_airflow_provider") if "leaseline" in ep.value]
    assert found, "the apache_airflow_provider entry point of leaseline is not installed"
    info = found[0].load()()
    assert info == get_provider_info()
    assert info["package-name"] == "leaseline"
    assert info["secrets-backends"] == ["leaseline.airflow.LeaselineBackend"]


def test_import_leaseline_airflow_does_not_import_airflow() -> None:
    code = "import sys, leaseline.airflow; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _dynamic_db(name: str, config: str) -> LeaselineBackend:
    MemoryBackend.put(
        name,
        "database/creds/etl",
        ttl=600,
        renewable=True,
        mint=random_fields("username", "password"),
    )
    return backend(
        config,
        variables_ref=f"{name}://airflow/variables/{{key}}",
        connections={
            "db": {
                "conn_type": "postgres",
                "login": f"{name}://database/creds/etl#username",
                "password": f"{name}://database/creds/etl#password",
            }
        },
    )


def test_outside_a_task_a_dynamic_lease_lives_only_for_the_lookup(
    store: tuple[str, str], canary: CanaryFixture
) -> None:
    # the api-server, scheduler, DAG processor, triggerer: no task process
    name, config = store
    b = _dynamic_db(name, config)
    conn = b.get_connection("db")
    assert conn is not None and conn.login
    assert MemoryBackend.live_leases(name) == [], "the lease outlived the lookup"
    MemoryBackend.put(name, "airflow/variables/k", {"value": canary.new()})
    assert b.get_variable("k") and b.get_variable("k")
    assert MemoryBackend.reads(name) == 2  # static values stay cached: one creds, one KV read


def test_in_a_task_the_lease_is_held_until_the_task_ends(
    store: tuple[str, str], in_task: None
) -> None:
    name, config = store
    b = _dynamic_db(name, config)
    assert b.get_connection("db") is not None
    assert len(MemoryBackend.live_leases(name)) == 1
    end_task()
    assert MemoryBackend.live_leases(name) == []


def test_an_execution_api_request_is_not_answered_again(
    store: tuple[str, str], canary: CanaryFixture
) -> None:
    # a task's own backend missed and asked the api-server (Execution API): not again here
    name, config = store
    MemoryBackend.put(name, "airflow/variables/k", {"value": canary.new()})
    b = _dynamic_db(name, config)
    route: dict[str, Any] = {"__name__": "airflow.api_fastapi.execution_api.routes.variables"}
    exec("def get_variable(b, key):\n    return b.get_variable(key)", route)
    exec("def get_connection(b, conn_id):\n    return b.get_conn_value(conn_id)", route)
    assert route["get_variable"](b, "k") is None
    assert route["get_connection"](b, "db") is None
    assert MemoryBackend.reads(name) == 0
    assert b.get_variable("k")  # the same backend answers anyone else


@pytest.fixture
def fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from leaseline.airflow import _backend

    monkeypatch.setattr(_backend, "_warned_empty", False)
    for name in ("AIRFLOW__SECRETS__BACKEND", "AIRFLOW__SECRETS__BACKEND_KWARGS"):
        monkeypatch.delenv(name, raising=False)


def test_no_references_configured_warns_once_with_the_fix(
    fresh_warning: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="leaseline.airflow"):
        LeaselineBackend()
        LeaselineBackend()
    warnings = [r.getMessage() for r in caplog.records if r.name == "leaseline.airflow"]
    assert len(warnings) == 1
    assert "no references configured" in warnings[0]
    assert "[workers] secrets_backend_kwargs" in warnings[0]


def test_workers_backend_without_kwargs_takes_the_secrets_kwargs(
    fresh_warning: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # [workers] secrets_backend set, no [workers] secrets_backend_kwargs: Airflow passes {}
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", "leaseline.airflow.LeaselineBackend")
    kwargs = {
        "variables_ref": "vault://secret/airflow/variables/{key}",
        "connections": {"db": "vault://x"},
    }
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps(kwargs))
    with caplog.at_level("WARNING", logger="leaseline.airflow"):
        b = LeaselineBackend()
    assert b.variables_ref == kwargs["variables_ref"]
    assert sorted(b.connections) == ["db"]
    assert not [r for r in caplog.records if r.name == "leaseline.airflow"]


def test_every_encoded_form_reaches_airflows_masker(
    store: tuple[str, str], canary: CanaryFixture
) -> None:
    import base64

    name, config = store
    value = canary.new()
    MemoryBackend.put(name, "airflow/variables/enc", {"value": value})
    assert backend(config, variables_ref=f"{name}://airflow/variables/{{key}}").get_variable("enc")
    b64 = base64.b64encode(value.encode()).decode()
    redacted = airflow_redact(f"b64={b64} hex={value.encode().hex()}")
    # Airflow joins its patterns in set order: the unpadded form may win, leaving "=="
    assert redacted.replace("***==", "***").replace("***=", "***") == "b64=*** hex=***"


def test_task_output_is_masked_at_the_source(canary: CanaryFixture) -> None:
    import base64
    import io

    from leaseline.masking import masker
    from leaseline.masking._stream import MaskedTextStream

    value = canary.new()
    masker().add(value)
    inner = io.StringIO()
    out = MaskedTextStream(inner)
    print(f"raw={value}", file=out)  # type: ignore[call-overload]
    print(f"b64={base64.b64encode(value.encode()).decode()}", file=out)  # type: ignore[call-overload]
    out.write("split=" + value[:7])
    out.write(value[7:] + "\n")
    out.flush()
    assert inner.getvalue() == "raw=***\nb64=***\nsplit=***\n"


@pytest.mark.parametrize("component", ["dag-processor", "triggerer"])
def test_dag_processor_and_triggerer_are_not_task_processes(
    store: tuple[str, str], monkeypatch: pytest.MonkeyPatch, component: str
) -> None:
    # both set the task runner's SUPERVISOR_COMMS, with decoders for their own messages
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner
    from pydantic import TypeAdapter

    if component == "dag-processor":
        from airflow.dag_processing.processor import ToDagProcessor as Messages
    else:
        from airflow.jobs.triggerer_job_runner import ToTriggerRunner as Messages
    comms = SimpleNamespace(body_decoder=TypeAdapter(Messages))
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    name, config = store
    assert _dynamic_db(name, config).get_connection("db") is not None
    assert MemoryBackend.live_leases(name) == [], f"the {component} kept a dynamic lease"
