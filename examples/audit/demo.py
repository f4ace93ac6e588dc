"""Write an audit trail, verify it, and analyze it — no server needed (the memory store).

python examples/audit/demo.py /tmp/leaseline-audit-demo
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from leaseline import Resolver
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    trail = workdir / "audit.jsonl"
    MemoryBackend.put("memory", "llm/openai", {"api_key": secrets.token_hex(16)})
    config = Config.from_mapping(
        {"audit": {"sink": f"file://{trail}", "hmac_key": secrets.token_hex(16), "fsync": "always"}}
    )
    with Resolver(config, handle_signals=False) as resolver:
        for _ in range(100):  # one store read, 99 cache hits counted in one event
            resolver.resolve("memory://llm/openai#api_key")
    cli = [sys.executable, "-m", "leaseline.cli", "audit"]
    subprocess.run([*cli, "tail", str(trail)], check=True)
    subprocess.run([*cli, "verify", str(trail)], check=True)
    subprocess.run([*cli, "analyze", str(trail)], check=False)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/leaseline-audit-demo"))
