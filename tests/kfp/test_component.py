"""leaseline.kfp without servers: generated components, task helpers, spec checks, in-task run."""

# No ``from __future__ import annotations``: KFP reads the component functions' annotations.
import io
import os
import secrets
from pathlib import Path
from typing import Any

import leaseline
import leaseline.kfp
import pytest
import yaml
from kfp import compiler, dsl
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend
from leaseline.kfp import _task
from leaseline.kfp._component import MARKER, leaseline_requirement
from leaseline.kfp._spec import check_text, secret_name
from leaseline.masking import Masker
from leaseline.masking._stream import MaskedTextStream

IMAGE = "python:3.11"


def fake_openai_key() -> str:
    """A value with the shape of an OpenAI key, made at run time (not a canary: it is written
    to spec files on purpose, to be found by the check)."""
    return "sk-proj-" + secrets.token_urlsafe(30)


def hello(name: str) -> str:
    return "hello " + name


def train(dataset: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model]) -> str:
    return "trained"


def compiled(pipeline: Any, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "spec.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    spec: dict[str, Any] = docs[0]
    if len(docs) > 1:
        spec["_platform"] = docs[1]
    return spec


def container(spec: dict[str, Any], executor: str) -> dict[str, Any]:
    result: dict[str, Any] = spec["deploymentSpec"]["executors"][executor]["container"]
    return result


# -- the component --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("install", "expected"),
    [
        (True, f"leaseline[vault]=={leaseline.__version__}"),
        ("leaseline[vault,aws]==9.9.9", "leaseline[vault,aws]==9.9.9"),
        (False, None),
    ],
)
def test_install_leaseline_puts_the_requirement_into_the_compiled_spec(
    install: Any, expected: str | None, tmp_path: Path
) -> None:
    comp = leaseline.kfp.component(hello, base_image=IMAGE, install_leaseline=install)
    command = "\n".join(container(compiled(comp, tmp_path), "exec-hello")["command"])
    if expected is None:
        assert "leaseline[" not in command and "'leaseline" not in command
    else:
        assert f"'{expected}'" in command
    assert MARKER in command
    assert "_leaseline_task.run(_leaseline_inner_hello" in command


def test_requirement_extras_follow_the_stores_of_the_secrets() -> None:
    version = leaseline.__version__
    assert leaseline_requirement(True, ["aws-sm://prod/openai#k"]) == f"leaseline[aws]=={version}"
    assert leaseline_requirement(True, ["env://X"]) == f"leaseline=={version}"
    assert leaseline_requirement(True) == f"leaseline[vault]=={version}"


def test_a_leaseline_requirement_given_by_the_user_is_not_duplicated(tmp_path: Path) -> None:
    comp = leaseline.kfp.component(
        hello, base_image=IMAGE, packages_to_install=["leaseline==0.0.1", "psycopg"]
    )
    command = "\n".join(container(compiled(comp, tmp_path), "exec-hello")["command"])
    assert "'leaseline==0.0.1'" in command and "leaseline[vault]" not in command


def test_the_generated_task_keeps_the_functions_interface(tmp_path: Path) -> None:
    plain = dsl.component(train, base_image=IMAGE)
    ours = leaseline.kfp.component(train, base_image=IMAGE, install_leaseline=False)
    assert ours.component_spec.inputs == plain.component_spec.inputs
    assert ours.component_spec.outputs == plain.component_spec.outputs
    source = container(compiled(ours, tmp_path), "exec-train")["command"][-1]
    namespace: dict[str, Any] = {}
    exec(compile(source, "ephemeral_component.py", "exec"), namespace)
    import inspect

    assert inspect.signature(namespace["train"]) == inspect.signature(train)
    assert namespace["train"].__annotations__ == train.__annotations__


def test_secrets_must_be_references_and_a_value_is_not_quoted() -> None:
    value = fake_openai_key()
    with pytest.raises(leaseline.InvalidReference) as info:
        leaseline.kfp.component(hello, base_image=IMAGE, secrets={"OPENAI_API_KEY": value})
    assert "OPENAI_API_KEY" in str(info.value) and "looks like a credential" in str(info.value)
    assert value not in str(info.value)
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        leaseline.kfp.component(hello, base_image=IMAGE, secrets={"BAD NAME": "vault://a/b"})


# -- task helpers ---------------------------------------------------------------------------------


def test_use_secrets_sets_references_and_refuses_values(tmp_path: Path) -> None:
    comp = leaseline.kfp.component(hello, base_image=IMAGE, install_leaseline=False)
    value = fake_openai_key()

    @dsl.pipeline(name="refs")
    def refs() -> None:
        task = comp(name="x")
        leaseline.kfp.use_secrets(task, {"OPENAI_API_KEY": "vault://secret/llm/openai#api_key"})
        with pytest.raises(leaseline.InvalidReference) as info:
            leaseline.kfp.use_secrets(task, {"HF_TOKEN": value})
        assert "task 'hello'" in str(info.value) and "HF_TOKEN" in str(info.value)
        assert value not in str(info.value)

    env = container(compiled(refs, tmp_path), "exec-hello")["env"]
    assert env == [{"name": "OPENAI_API_KEY", "value": "vault://secret/llm/openai#api_key"}]


def test_use_secrets_refuses_a_plain_kfp_component(tmp_path: Path) -> None:
    plain = dsl.component(hello, base_image=IMAGE)

    @dsl.pipeline(name="plain")
    def p() -> None:
        with pytest.raises(TypeError, match=r"leaseline\.kfp\.component"):
            leaseline.kfp.use_secrets(plain(name="x"), {"K": "vault://a/b"})

    compiler.Compiler().compile(p, str(tmp_path / "p.yaml"))


def test_vault_kubernetes_auth_sets_address_and_role_only(tmp_path: Path) -> None:
    comp = leaseline.kfp.component(hello, base_image=IMAGE, install_leaseline=False)

    @dsl.pipeline(name="k8s")
    def p() -> None:
        task = comp(name="x")
        leaseline.kfp.vault_kubernetes_auth(
            task, role="training", addr="https://vault.internal:8200", mount="k8s-prod"
        )

    env = {e["name"]: e["value"] for e in container(compiled(p, tmp_path), "exec-hello")["env"]}
    assert env == {
        "LEASELINE_STORES__VAULT__ADDR": "https://vault.internal:8200",
        "LEASELINE_STORES__VAULT__AUTH__METHOD": "kubernetes",
        "LEASELINE_STORES__VAULT__AUTH__ROLE": "training",
        "LEASELINE_STORES__VAULT__AUTH__MOUNT": "k8s-prod",
    }
    # the environment form is what the core reads
    cfg = leaseline._config.load_config(environ=env)
    assert cfg.stores["vault"]["auth"] == {
        "method": "kubernetes",
        "role": "training",
        "mount": "k8s-prod",
    }


def test_vault_agent_annotations_go_to_the_pod_metadata(tmp_path: Path) -> None:
    comp = leaseline.kfp.component(hello, base_image=IMAGE, install_leaseline=False)

    @dsl.pipeline(name="agent")
    def p() -> None:
        leaseline.kfp.vault_agent_annotations(
            comp(name="x"),
            role="training",
            secrets={"openai": "secret/data/llm/openai"},
            templates={
                "openai": '{{ with secret "secret/data/llm/openai" }}{{ .Data.data.api_key }}{{ end }}'
            },
        )

    spec = compiled(p, tmp_path)
    executors = spec["_platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    annotations = executors["exec-hello"]["podMetadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject"] == "true"
    assert annotations["vault.hashicorp.com/role"] == "training"
    assert annotations["vault.hashicorp.com/agent-pre-populate-only"] == "true"
    assert annotations["vault.hashicorp.com/agent-inject-secret-openai"] == "secret/data/llm/openai"
    assert "agent-inject-template-openai" in "".join(annotations)


# -- spec checks ----------------------------------------------------------------------------------


def test_compile_rejects_a_literal_key_naming_task_and_variable(tmp_path: Path) -> None:
    comp = leaseline.kfp.component(hello, base_image=IMAGE, install_leaseline=False)
    value = fake_openai_key()

    @dsl.pipeline(name="leaky")
    def leaky() -> None:
        comp(name="x").set_env_variable("OPENAI_API_KEY", value)

    target = tmp_path / "leaky.yaml"
    with pytest.raises(leaseline.kfp.UnsafeSpec) as info:
        leaseline.kfp.compile(leaky, target)
    message = str(info.value)
    assert "task 'hello'" in message and "environment variable OPENAI_API_KEY" in message
    assert "OpenAI API key" in message
    assert value not in message
    assert list(tmp_path.iterdir()) == []  # nothing left on disk


def test_check_spec_rejects_a_literal_key_naming_task_and_variable(tmp_path: Path) -> None:
    comp = leaseline.kfp.component(hello, base_image=IMAGE, install_leaseline=False)

    @dsl.pipeline(name="leaky")
    def leaky() -> None:
        comp(name="x").set_env_variable("WANDB_API_TOKEN", "not-a-reference-but-no-pattern")

    path = tmp_path / "raw.yaml"
    compiler.Compiler().compile(leaky, str(path))  # plain KFP compile: no check
    with pytest.raises(leaseline.kfp.UnsafeSpec) as info:
        leaseline.kfp.check_spec(path)
    (finding,) = info.value.findings
    assert finding.where == "task 'hello': environment variable WANDB_API_TOKEN"
    assert "name says it is a secret" in finding.what


def test_check_finds_parameters_code_and_resolved_values(tmp_path: Path, canary: Any) -> None:
    resolved = canary.new()
    MemoryBackend.put("memory", "kfp/resolved", {"v": resolved})
    with leaseline.Resolver(Config.from_mapping({})) as r:
        assert r.resolve("memory://kfp/resolved#v") == resolved
        comp = leaseline.kfp.component(hello, base_image=IMAGE, install_leaseline=False)
        key = fake_openai_key()

        @dsl.pipeline(name="params")
        def params(api_key: str = key, db_password: str = "hunter2hunter2") -> None:
            task = comp(name=api_key)
            task.set_env_variable("GREETING", resolved)
            comp(name=db_password)

        with pytest.raises(leaseline.kfp.UnsafeSpec) as info:
            leaseline.kfp.compile(params, tmp_path / "p.yaml")
    text = "\n".join(str(f) for f in info.value.findings)
    assert (
        "the pipeline: pipeline parameter api_key: holds a literal that looks like a credential (OpenAI API key)"
        in text
    )
    assert "pipeline parameter db_password: its name says it is a secret" in text
    assert "environment variable GREETING: holds a value this process resolved" in text
    assert resolved not in str(info.value) and key not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_check_finds_a_key_written_into_component_code() -> None:
    key = fake_openai_key()
    source = f"def f():\n    return OpenAI(api_key='{key}')\n"
    spec = {
        "components": {"comp-f": {"executorLabel": "exec-f"}},
        "root": {
            "dag": {"tasks": {"f": {"componentRef": {"name": "comp-f"}, "taskInfo": {"name": "f"}}}}
        },
        "deploymentSpec": {"executors": {"exec-f": {"container": {"command": ["sh", source]}}}},
    }
    (finding,) = check_text(yaml.safe_dump(spec))
    assert finding.where.startswith("task 'f'") and "OpenAI API key" in finding.what
    # a templated connection string in code is not a credential
    spec["deploymentSpec"]["executors"]["exec-f"]["container"]["command"] = [
        'url = f"postgresql://{user}:{password}@db/x"'
    ]
    assert check_text(yaml.safe_dump(spec)) == []


def test_the_example_pipeline_compiles_to_references_only(tmp_path: Path) -> None:
    from tests.kfp.test_local_run import load_example

    example = load_example()
    path = tmp_path / "pipeline.yaml"
    leaseline.kfp.compile(
        example.build_pipeline(vault_addr="https://vault:8200", kubernetes_role="training"), path
    )
    env = container(yaml.safe_load(path.read_text()), "exec-prepare-data")["env"]
    assert {"name": "PGPASSWORD", "value": "vault://database/creds/reader#password"} in env
    assert "TOKEN" not in path.read_text()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("OPENAI_API_KEY", True),
        ("hfToken", True),
        ("PGPASSWORD", True),
        ("DATA_PATH", False),
        ("MONKEY_BUSINESS", False),
        ("db_creds", True),
    ],
)
def test_secret_names(name: str, expected: bool) -> None:
    assert secret_name(name) is expected


# -- the in-task runtime (memory store; the real run is in test_local_run.py) --------------------


@pytest.fixture
def memory_resolver(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(leaseline.masking, "mask_std_streams", lambda m=None: None)
    resolvers: list[leaseline.Resolver] = []

    def factory() -> leaseline.Resolver:
        resolvers.append(leaseline.Resolver(Config.from_mapping({})))
        return resolvers[-1]

    yield factory
    for r in resolvers:
        r.close()


def test_run_resolves_env_references_and_secrets_then_restores(
    memory_resolver: Any, monkeypatch: pytest.MonkeyPatch, canary: Any
) -> None:
    a, b = canary.new(), canary.new()
    MemoryBackend.put("memory", "kfp/a", {"api_key": a})
    MemoryBackend.put(
        "memory", "kfp/db", {"username": "u1", "password": b}, ttl=300, renewable=True
    )
    monkeypatch.setenv("K_A", "memory://kfp/a#api_key")
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200")
    monkeypatch.setenv("LEASELINE_AUDIT__HMAC_KEY", "env://SOMETHING")
    seen: dict[str, str] = {}

    def fn(x: int) -> int:
        seen.update(os.environ)
        return x + 1

    result = _task.run(
        fn,
        (),
        {"x": 1},
        secrets={"DB_PASSWORD": "memory://kfp/db#password"},
        resolver_factory=memory_resolver,
    )
    assert result == 2
    assert seen["K_A"] == a and seen["DB_PASSWORD"] == b
    assert seen["VAULT_ADDR"] == "http://127.0.0.1:8200"
    assert seen["LEASELINE_AUDIT__HMAC_KEY"] == "env://SOMETHING"
    assert os.environ["K_A"] == "memory://kfp/a#api_key" and "DB_PASSWORD" not in os.environ
    assert MemoryBackend.live_leases("memory") == []  # revoked at the end of the step


def test_run_refuses_to_return_a_resolved_value(memory_resolver: Any, canary: Any) -> None:
    value = canary.new()
    MemoryBackend.put("memory", "kfp/r", {"username": "user-1234", "password": value})

    def leak() -> Any:
        return {"note": "x", "conn": "postgresql://user-1234@db?password=" + os.environ["P"]}

    with pytest.raises(leaseline.kfp.SecretOutputRefused, match="output 'Output'") as info:
        _task.run(
            leak, (), {}, secrets={"P": "memory://kfp/r#password"}, resolver_factory=memory_resolver
        )
    assert value not in str(info.value)

    def username() -> str:  # another field of the same secret counts too
        return "user-1234"

    with pytest.raises(leaseline.kfp.SecretOutputRefused):
        _task.run(
            username,
            (),
            {},
            secrets={"P": "memory://kfp/r#password"},
            resolver_factory=memory_resolver,
        )


def test_run_refuses_a_resolved_value_in_output_files_and_metadata(
    memory_resolver: Any, canary: Any, tmp_path: Path
) -> None:
    value = canary.new()
    MemoryBackend.put("memory", "kfp/f", {"api_key": value})
    model = dsl.Model(uri=str(tmp_path / "model"))

    def to_file(model: dsl.Output[dsl.Model]) -> None:
        Path(model.path).write_text("key=" + os.environ["K"])

    with pytest.raises(leaseline.kfp.SecretOutputRefused, match="output file"):
        _task.run(
            to_file,
            (),
            {"model": model},
            secrets={"K": "memory://kfp/f#api_key"},
            resolver_factory=memory_resolver,
        )
    assert not Path(model.path).exists()  # removed: the value is not left in the pipeline root

    def to_metadata(model: dsl.Output[dsl.Model]) -> None:
        model.metadata["auth"] = os.environ["K"]

    with pytest.raises(leaseline.kfp.SecretOutputRefused, match="metadata of artifact 'model'"):
        _task.run(
            to_metadata,
            (),
            {"model": dsl.Model(uri=str(tmp_path / "m2"))},
            secrets={"K": "memory://kfp/f#api_key"},
            resolver_factory=memory_resolver,
        )


def test_masking_stream_masks_each_write() -> None:
    m = Masker()
    m.add("s3cr3t-value")
    inner = io.StringIO()
    stream = MaskedTextStream(inner, m)  # type: ignore[arg-type]
    print("the value is s3cr3t-value", file=stream)  # type: ignore[arg-type]
    stream.writelines(["and again s3cr3t-value\n"])
    assert inner.getvalue() == "the value is ***\nand again ***\n"
    assert stream.getvalue() == inner.getvalue()  # other attributes pass through


def test_task_and_leaseline_run_read_references_from_the_environment_alike(
    memory_resolver: Any, monkeypatch: pytest.MonkeyPatch, canary: Any
) -> None:
    """One rule (issue 21): ``file://``/``env://`` values are ordinary URLs unless configured,
    as for ``leaseline run``; before, the task resolved them (or failed on them)."""
    from leaseline.runtime.run import implicit_refs

    value = canary.new()
    MemoryBackend.put("memory", "kfp/same", {"api_key": value})
    monkeypatch.setenv("K_SAME", "memory://kfp/same#api_key")
    monkeypatch.setenv("DATA_FILE", "file:///etc/hostname")
    monkeypatch.setenv("HOME_AGAIN", "env://HOME")
    seen: dict[str, str] = {}
    resolver = memory_resolver()
    assert implicit_refs(os.environ, resolver) == _task.references_in_env(os.environ, resolver)
    _task.run(lambda: seen.update(os.environ), (), {}, resolver_factory=lambda: resolver)
    assert seen["K_SAME"] == value
    assert seen["DATA_FILE"] == "file:///etc/hostname" and seen["HOME_AGAIN"] == "env://HOME"
