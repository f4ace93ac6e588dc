"""The kernel's leases: ``%leaseline leases`` lists them, and a kernel restart or shutdown (the
frontend's ``shutdown_request``) revokes them in the store (real OpenBao database engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from tests.cli.conftest import lease_alive
from tests.servers import OpenBao
from tests.servers.vault_db import DatabaseEngine

from .conftest import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


TAKE = (
    "%load_ext leaseline\n"
    "import leaseline\n"
    "_ = leaseline.resolve({ref!r})\n"
    "print(leaseline.default_resolver().leases()[0][1].id)"
)


def test_restart_and_shutdown_revoke_the_kernels_leases(
    vault_env: OpenBao,
    vault_db: DatabaseEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    ref = f"vault://{vault_db.creds_path()}#password"
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        first = run(kc, TAKE.format(ref=ref)).strip()
        assert lease_alive(vault_env, first)
        listed = run(kc, "%leaseline leases")
        assert f"vault://{vault_db.creds_path()}" in listed and "renewable" in listed

        km.restart_kernel(now=False)  # what "Restart kernel" in Jupyter sends
        assert not lease_alive(vault_env, first)

        kc.wait_for_ready(timeout=60)
        second = run(kc, TAKE.format(ref=ref)).strip()
        assert second != first and lease_alive(vault_env, second)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)  # "Shut down kernel"
    assert not lease_alive(vault_env, second)
