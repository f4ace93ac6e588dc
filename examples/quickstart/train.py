"""A toy training task for `leaseline run` (see README.md in this folder).

It receives its credentials as plain environment variables, the way an unmodified training
script would; `leaseline run` resolves them from references, masks them in this script's
output, keeps the database lease renewed while the script runs and revokes it when it exits.

    leaseline run --env OPENAI_API_KEY=vault://secret/llm/openai#api_key \\
                  --env DB_USER=vault://database/creds/trainer#username \\
                  --env DB_PASSWORD=vault://database/creds/trainer#password \\
                  -- python examples/quickstart/train.py
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

GREEN, DIM, RESET = "\033[32m", "\033[2m", "\033[0m"


def colour(text: str, code: str) -> str:
    return f"{code}{text}{RESET}" if sys.stdout.isatty() else text


def count_rows(user: str, password: str) -> int:
    import psycopg

    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=int(os.environ.get("PGPORT", "5432")),
        dbname=os.environ.get("PGDATABASE", "postgres"),
        user=user,
        password=password,
        connect_timeout=5,
    ) as conn:
        row = conn.execute("SELECT count(*) FROM public.training_rows").fetchone()
        return int(row[0]) if row else 0


def main() -> int:
    key = os.environ["OPENAI_API_KEY"]
    # A careless script prints its credential, raw and encoded: leaseline masks every form.
    print(f"config: api_key={key}")
    print(f"config (base64): {base64.b64encode(key.encode()).decode()}")
    print(f"config (json): {json.dumps({'api_key': key})}")

    user, password = os.environ.get("DB_USER"), os.environ.get("DB_PASSWORD")
    hold = float(os.environ.get("TRAIN_SECONDS", "10"))
    if user and password:
        print(f"database user: {user} (a dynamic credential, leased for this run)")
        print(f"epoch 0: {count_rows(user, password)} training rows readable")
    started = time.monotonic()
    epoch = 0
    while time.monotonic() - started < hold:
        epoch += 1
        time.sleep(1)
        print(colour(f"epoch {epoch}: loss {1 / (epoch + 1):.3f}", GREEN), flush=True)
    if user and password:
        # Past the credential's original TTL: it still works because leaseline renewed it.
        print(f"after {hold:.0f}s: {count_rows(user, password)} rows readable with the same login")
    print(colour("training done", DIM))
    return 0


if __name__ == "__main__":
    sys.exit(main())
