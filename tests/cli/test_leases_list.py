"""`leaseline leases list --all`: the expiry column agrees with the status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from click.testing import CliRunner
from leaseline.cli import cli


def test_a_revoked_lease_shows_no_expiry(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    records = [
        {"op": "run", "pid": os.getpid(), "started": None, "cmd": ["true"]},
        {
            "op": "lease",
            "pid": os.getpid(),
            "store": "vault",
            "ref": "vault://database/creds/reader",
            "lease_id": "database/creds/reader/abc123",
            "expires_at": time.time() + 112,
        },
        {"op": "revoked", "id": "database/creds/reader/abc123"},
    ]
    ledger.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tmp_path / "leaseline.toml"
    config.write_text(f'[ledger]\npath = "{ledger}"\n')
    result = CliRunner().invoke(
        cli, ["--config", str(config), "leases", "list", "--all"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if "abc123" in line]
    assert "revoked" in row
    assert "in 1" not in row and "expires in" not in row, row
