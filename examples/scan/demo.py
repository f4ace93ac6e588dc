"""Scan a throwaway repository with generated credentials (nothing real, nothing kept)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from leaseline.scan.corpus import make_corpus


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_corpus(root)
        cmd = [sys.executable, "-m", "leaseline.scan", "--no-managed", "notebooks/train.ipynb"]
        first = subprocess.run(cmd, cwd=root).returncode
        nb_path = root / "notebooks/train.ipynb"
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            cell["outputs"] = []
            cell["source"] = [
                "import leaseline\n",
                "co = cohere.Client(leaseline.resolve('vault://secret/llm/cohere#api_key'))\n",
            ]
        nb_path.write_text(json.dumps(nb))
        second = subprocess.run(cmd, cwd=root).returncode
        print(f"exit codes: before {first}, after clearing outputs {second}")
        return 0 if (first, second) == (1, 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
