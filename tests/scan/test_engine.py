"""Detectors against the generated corpus: every family found in every file type, no look-alikes."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
from leaseline.scan import Scanner, redact
from leaseline.scan.corpus import FAMILIES, Planted, score


@pytest.fixture(scope="module")
def findings(corpus: tuple[Path, list[Planted]]):  # type: ignore[no-untyped-def]
    root, _ = corpus
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return Scanner().scan_paths(["."])
    finally:
        os.chdir(cwd)


def test_every_planted_credential_is_found_and_nothing_else(corpus, findings) -> None:  # type: ignore[no-untyped-def]
    root, planted = corpus
    tp, fp, missed = score(planted, [(f.path, f.line, f.secret) for f in findings], root)
    assert not missed, sorted((m.path, m.family) for m in missed)
    assert (tp, fp) == (len(planted), 0)


def test_every_family_in_more_than_one_file_type(corpus) -> None:  # type: ignore[no-untyped-def]
    _, planted = corpus
    kinds: dict[str, set[str]] = {}
    for item in planted:
        kinds.setdefault(item.family, set()).add(Path(item.path).suffix or Path(item.path).name)
    assert set(kinds) == set(FAMILIES)
    assert all(len(v) >= 2 for v in kinds.values()), kinds


def test_negative_files_have_no_findings(findings) -> None:  # type: ignore[no-untyped-def]
    negatives = {
        "models/checksums.yaml",
        "notebooks/plots.ipynb",
        "src/config.py",
        "data/manifest.json",
        ".env.example",
    }
    assert not [f for f in findings if f.path in negatives]


def test_notebook_findings_name_cell_output_and_raw_line(corpus, findings) -> None:  # type: ignore[no-untyped-def]
    root, _ = corpus
    nb = [f for f in findings if f.path == "notebooks/train.ipynb"]
    where = {f.family: f.location for f in nb}
    assert where["cohere"] == "cell 1 (code) source"
    assert where["openai"] == "cell 2 output 1 (stdout)"
    assert where["huggingface"] == "cell 3 output 1 (execute_result text/plain)"
    assert where["google"] == "cell 4 output 1 (display_data text/html)"
    assert where["database"] == "cell 5 output 1 (error)"
    lines = (root / "notebooks/train.ipynb").read_text().splitlines()
    for f in nb:
        assert f.secret[:20] in lines[f.line - 1]


def test_repr_and_dict_never_hold_the_value(findings) -> None:  # type: ignore[no-untyped-def]
    for f in findings:
        shown = repr(f) + json.dumps(f.to_dict())
        assert f.secret not in shown and f.secret[:12] not in shown


def test_redact_shows_at_most_a_prefix_and_length() -> None:
    value = "sk-proj-" + secrets.token_hex(24)
    assert redact(value) == f"sk-p…({len(value)} chars)"
    assert redact("short-pw") == "…(8 chars)"


@pytest.mark.parametrize(
    "text",
    [
        'OPENAI_API_KEY = "vault://secret/llm/openai#api_key"',
        'url = "postgresql://app:${PG_PASSWORD}@db/app"',
        "url = postgresql://user:<password>@localhost/db",
        'token = os.environ["HF_TOKEN"]',
        "s.get_a_really_long_attribute_name()",
        'tokenizer = "bert-base-uncased-v2"',
        "max_tokens = 40960000",
        'password_hash = "' + "ab" * 32 + '"',
        # a placeholder body; the armor is split so this file is not a PEM look-alike itself
        "-----BEGIN " + "PRIVATE KEY-----\n...\n-----END " + "PRIVATE KEY-----",
    ],
)
def test_look_alikes_are_not_findings(text: str) -> None:
    assert Scanner().scan_text("x.py", text) == []


def test_dockerfile_env_and_compose_forms() -> None:
    pw = secrets.token_urlsafe(18)
    found = Scanner().scan_text("Dockerfile", f"FROM x\nENV DB_PASSWORD {pw}\n")
    assert [(f.rule, f.line) for f in found] == [("generic-secret-unquoted", 2)]
    found = Scanner().scan_text(
        "docker-compose.yml", f"services:\n  a:\n    environment:\n      - API_TOKEN={pw}\n"
    )
    assert [f.line for f in found] == [4]
