"""ML run folders: a real Hydra app's ``.hydra/`` output and a Weights & Biases ``config.yaml``
are scanned as what they are (values found under the names they were given)."""

from __future__ import annotations

import secrets
import string
import subprocess
import sys
from pathlib import Path

from leaseline.scan import scan

APP = """\
import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    print("training", cfg.model)


main()
"""


def _key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "sk-proj-" + "".join(secrets.choice(alphabet) for _ in range(48))


def test_hydra_run_folder_keeps_the_override_and_scan_finds_it(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(
        "db:\n  host: localhost\n  password: ???\nmodel: resnet18\n"
    )
    (tmp_path / "train.py").write_text(APP)
    key, password = _key(), secrets.token_urlsafe(18)
    run_dir = tmp_path / "outputs" / "run1"
    done = subprocess.run(
        [
            sys.executable,
            "train.py",
            f"db.password={password}",
            f"+openai_api_key={key}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    hydra = run_dir / ".hydra"
    assert password in (hydra / "overrides.yaml").read_text()  # what Hydra keeps on disk

    result = scan([str(tmp_path / "outputs")], managed=False)
    found = {
        (Path(f.path).name, f.line, f.secret == key, f.secret == password) for f in result.findings
    }
    assert ("overrides.yaml", 1, False, True) in found  # - db.password=...
    assert ("overrides.yaml", 2, True, False) in found  # - +openai_api_key=...
    assert ("config.yaml", 3, False, True) in found  # db: / password: ...
    assert ("config.yaml", 5, True, False) in found
    assert all(".hydra" in f.path or "app.log" in f.path for f in result.findings)
    assert result.exit_code == 1


def test_wandb_config_values_are_judged_by_their_name(tmp_path: Path) -> None:
    """``files/config.yaml`` as wandb writes it (a top-level ``_wandb`` key, every value
    nested under ``value:``, older versions with ``desc: null`` before it)."""
    password, key = secrets.token_urlsafe(18), _key()
    files = tmp_path / "wandb" / "run-20261201_120000-3kq9x2ab" / "files"
    files.mkdir(parents=True)
    (files / "config.yaml").write_text(
        "_wandb:\n"
        "  value:\n"
        "    cli_version: 0.31.0\n"
        "    python_version: 3.11.9\n"
        "db_password:\n"
        f"  value: {password}\n"
        "lr:\n"
        "  desc: null\n"
        "  value: 0.001\n"
        "openai_api_key:\n"
        "  desc: null\n"
        f"  value: {key}\n"
        "run_name:\n"
        "  value: baseline-resnet18-lr0.001\n"
    )
    result = scan([str(tmp_path)], managed=False)
    got = sorted(
        (f.line, f.location, f.secret == password, f.secret == key) for f in result.findings
    )
    assert got == [
        (6, "W&B config db_password", True, False),
        (12, None, False, True),  # found in the whole file already: reported once
    ]
