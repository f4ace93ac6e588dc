"""Train on rows read with short-lived database credentials; ask an LLM to describe the model.

    python examples/prefect/blocks.py          # once: saves reference-only blocks
    VAULT_TOKEN=... python examples/prefect/flow.py

- the database user exists only for this flow run: Vault creates it when ``load_rows`` asks,
  and it is revoked (the PostgreSQL role dropped) when the run ends, whether it succeeds, fails
  or crashes;
- the LLM key is read from Vault inside the task, never stored in Prefect, masked in the run
  logs, and every read is audited with the flow-run and task-run ids.

``LLM_BASE_URL`` points at any OpenAI-compatible endpoint (default: api.openai.com).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter

import psycopg
from leaseline.prefect import DatabaseCredentials, SecretReference
from prefect import flow, get_run_logger, task


@task
def load_rows(db_block: str) -> list[tuple[int, str]]:
    db = DatabaseCredentials.load(db_block)
    with psycopg.connect(db.get_url(), connect_timeout=10) as conn:
        rows = conn.execute("SELECT id, text FROM training_rows ORDER BY id").fetchall()
    get_run_logger().info("read %d rows from %s", len(rows), db.address())
    return [(int(i), str(t)) for i, t in rows]


@task
def train(rows: list[tuple[int, str]]) -> dict[str, float]:
    """A unigram language model: the toy stand-in for a real training step."""
    counts = Counter(word for _, text in rows for word in text.split())
    total = sum(counts.values())
    return {word: n / total for word, n in counts.most_common()}


@task
def describe(model: dict[str, float], key_block: str, base_url: str) -> str:
    api_key = SecretReference.load(key_block).get()
    top = ", ".join(list(model)[:5])
    body = {
        "model": os.environ.get("LLM_MODEL", "gpt-4o-mini"),
        "messages": [{"role": "user", "content": f"Describe a corpus whose top words are {top}."}],
    }
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    return str(answer["choices"][0]["message"]["content"])


@flow(log_prints=True)
def train_and_describe(
    db_block: str = "training-db",
    key_block: str = "openai",
    llm_base_url: str = "https://api.openai.com/v1",
) -> dict[str, object]:
    model = train(load_rows(db_block))
    summary = describe(model, key_block, llm_base_url)
    print(f"model of {len(model)} words; the LLM says: {summary}")
    return {"words": len(model), "summary": summary}


if __name__ == "__main__":
    result = train_and_describe(
        llm_base_url=os.environ.get("LLM_BASE_URL", "https://api.openai.com/v1")
    )
    print(json.dumps(result))
