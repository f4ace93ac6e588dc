"""A synthetic corpus for tests and benchmarks: planted credentials and their look-alikes.

Every value is generated when :func:`make_corpus` runs (``secrets``), so nothing secret-looking
is ever committed. Positives cover every detector family in every file type an ML repository has
(notebook sources and outputs, DAG files, Dockerfile, compose, ``.env``, pipeline YAML, PEM files);
negatives are what generic scanners flag by mistake (digests, UUIDs, base64 images in notebook
outputs, model checksums, references, placeholders).

Why ~470 lines: mostly the generators of the planted credential families (values made at
run time, never committed) and the file shapes they are planted in.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "Planted", "make_corpus", "score"]

FAMILIES = (
    "openai",
    "anthropic",
    "huggingface",
    "google",
    "cohere",
    "mistral",
    "groq",
    "replicate",
    "wandb",
    "langsmith",
    "pinecone",
    "vault",
    "aws",
    "database",
    "private-key",
)
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Planted:
    path: str  # relative to the corpus root
    family: str
    value: str


def _an(n: int, alphabet: str = _ALNUM) -> str:
    while True:
        out = "".join(secrets.choice(alphabet) for _ in range(n))
        if n < 8 or (any(c.isdigit() for c in out) and any(c.isupper() for c in out)):
            return out


def _hex(n: int) -> str:
    return secrets.token_hex(n // 2)


def _pem() -> str:
    body = base64.b64encode(secrets.token_bytes(600)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    # the armor is assembled here so this source file itself is not a PEM look-alike to scanners
    kind = "RSA " + "PRIVATE KEY"
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----"


def _uuid() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


class _Plant:
    def __init__(self) -> None:
        self.items: list[Planted] = []
        self.path = ""

    def __call__(self, family: str, value: str) -> str:
        self.items.append(Planted(self.path, family, value))
        return value


def _notebook(cells: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "cells": cells,
            "metadata": {"kernelspec": {"name": "python3"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        },
        indent=1,
    )


def _code(source: str, outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": 1,
        "metadata": {},
        "source": source.splitlines(keepends=True),
        "outputs": outputs or [],
    }


def _png() -> str:
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(3000)).decode()


def _files(p: _Plant) -> dict[str, str]:
    files: dict[str, str] = {}

    def put(path: str, build: Any) -> None:
        p.path = path
        files[path] = build()

    # ---- positives -------------------------------------------------------------------------
    put(
        "notebooks/train.ipynb",
        lambda: _notebook(
            [
                _code(f'import cohere\nco = cohere.Client("{p("cohere", _an(40))}")\n'),
                _code(
                    "import os\nprint('OPENAI_API_KEY=' + os.environ['OPENAI_API_KEY'])",
                    [
                        {
                            "output_type": "stream",
                            "name": "stdout",
                            "text": [
                                f"OPENAI_API_KEY={p('openai', 'sk-proj-' + _an(20) + 'T3BlbkFJ' + _an(20))}\n"
                            ],
                        },
                    ],
                ),
                _code(
                    "from huggingface_hub import get_token\nget_token()",
                    [
                        {
                            "output_type": "execute_result",
                            "execution_count": 3,
                            "metadata": {},
                            "data": {"text/plain": [f"'{p('huggingface', 'hf_' + _an(34))}'"]},
                        },
                    ],
                ),
                _code(
                    "show_config()",
                    [
                        {
                            "output_type": "display_data",
                            "metadata": {},
                            "data": {
                                "text/html": [
                                    f"<td>google_api_key</td><td>{p('google', 'AIza' + _an(35))}</td>"
                                ],
                                "image/png": _png(),
                            },
                        },
                    ],
                ),
                _code(
                    "df = load_features()",
                    [
                        {
                            "output_type": "error",
                            "ename": "OperationalError",
                            "evalue": "connection failed",
                            "traceback": [
                                "\x1b[0;31mOperationalError\x1b[0m: connection to "
                                f"postgresql://ml:{p('database', _an(16))}@db:5432/features failed"
                            ],
                        },
                    ],
                ),
            ]
        ),
    )
    put(
        "notebooks/eval.ipynb",
        lambda: _notebook(
            [
                _code(
                    f'client = anthropic.Anthropic(api_key="{p("anthropic", "sk-ant-api03-" + _an(93) + "AA")}")\n'
                    f'MISTRAL_API_KEY = "{p("mistral", _an(32))}"\n'
                ),
                _code(
                    "print(os.environ)",
                    [
                        {
                            "output_type": "stream",
                            "name": "stdout",
                            "text": [
                                f"environ({{'LANGCHAIN_API_KEY': '{p('langsmith', 'lsv2_pt_' + _hex(32) + '_' + _hex(10))}'}})\n"
                            ],
                        },
                    ],
                ),
                _code(
                    "hvac_login()",
                    [
                        {
                            "output_type": "error",
                            "ename": "Forbidden",
                            "evalue": f"permission denied for token {p('vault', 'hvs.' + _an(90))}",
                            "traceback": ["Forbidden: permission denied"],
                        },
                    ],
                ),
                _code(
                    "boto3.Session().get_credentials().access_key",
                    [
                        {
                            "output_type": "execute_result",
                            "execution_count": 5,
                            "metadata": {},
                            "data": {
                                "text/plain": [
                                    f"'{p('aws', 'AKIA' + _an(16, string.ascii_uppercase + string.digits))}'"
                                ]
                            },
                        },
                    ],
                ),
                _code(
                    "!cat ~/.ssh/id_rsa",
                    [
                        {
                            "output_type": "stream",
                            "name": "stdout",
                            "text": [p("private-key", _pem()) + "\n"],
                        },
                    ],
                ),
                _code(
                    "replicate.Client()",
                    [
                        {
                            "output_type": "stream",
                            "name": "stderr",
                            "text": [f"auth with token {p('replicate', 'r8_' + _an(37))}\n"],
                        },
                    ],
                ),
            ]
        ),
    )
    put(
        "dags/train_dag.py",
        lambda: (
            "from airflow.sdk import dag, task\n\n"
            f'WANDB_API_KEY = "{p("wandb", _hex(40))}"\n'
            f'WAREHOUSE = "mysql+pymysql://etl:{p("database", _an(18))}@warehouse:3306/db"\n'
            f'replicate_token = "{p("replicate", "r8_" + _an(37))}"\n'
            f'GROQ = "{p("groq", "gsk_" + _an(52))}"\n\n'
            "@dag(schedule=None)\ndef train():\n    @task\n    def fit():\n        return 1\n"
        ),
    )
    put(
        "Dockerfile",
        lambda: (
            "FROM python:3.11-slim\n"
            f"ENV ANTHROPIC_API_KEY={p('anthropic', 'sk-ant-api03-' + _an(93) + 'AA')}\n"
            f"ARG HF_TOKEN={p('huggingface', 'hf_' + _an(34))}\n"
            f"ENV AWS_ACCESS_KEY_ID={p('aws', 'AKIA' + _an(16, string.ascii_uppercase + string.digits))}\n"
            f"ENV AWS_SECRET_ACCESS_KEY={p('aws', _an(40, _ALNUM + '/+'))}\n"
            "RUN pip install torch\n"
        ),
    )
    put(
        "docker-compose.yml",
        lambda: (
            "services:\n  trainer:\n    image: trainer:latest\n    environment:\n"
            f"      - GROQ_API_KEY={p('groq', 'gsk_' + _an(52))}\n"
            f'      MISTRAL_API_KEY: "{p("mistral", _an(32))}"\n'
            f"      VAULT_TOKEN: {p('vault', 'hvs.' + _an(90))}\n"
        ),
    )
    put(
        ".env",
        lambda: (
            f"LANGCHAIN_API_KEY={p('langsmith', 'lsv2_sk_' + _hex(32) + '_' + _hex(10))}\n"
            f"PINECONE_API_KEY={p('pinecone', 'pcsk_' + _an(6) + '_' + _an(60))}\n"
            f"COHERE_API_KEY={p('cohere', _an(40))}\n"
            f"DATABASE_URL=postgresql+psycopg://app:{p('database', _an(20))}@db:5432/app\n"
        ),
    )
    put(
        "pipelines/pipeline.yaml",
        lambda: (
            "deploymentSpec:\n  executors:\n    train:\n      container:\n        env:\n"
            f"        - name: OPENAI_API_KEY\n          value: {p('openai', 'sk-proj-' + _an(64))}\n"
            f'        - name: WANDB_API_KEY\n          value: "wandb {p("wandb", _hex(40))}"\n'
            f"        - name: VAULT_TOKEN\n          value: {p('vault', 's.' + _an(24))}\n"
        ),
    )
    put(
        "src/settings.py",
        lambda: (
            f'GOOGLE_API_KEY = "{p("google", "AIza" + _an(35))}"\n'
            f'PINECONE_API_KEY = "{p("pinecone", _uuid())}"\n'
        ),
    )
    put("keys/deploy_key.pem", lambda: p("private-key", _pem()) + "\n")

    # ---- negatives -------------------------------------------------------------------------
    put(
        "models/checksums.yaml",
        lambda: "".join(
            f'- file: shard-{i:05d}.safetensors\n  sha256: "{_hex(64)}"\n  md5: "{_hex(32)}"\n'
            f'  commit: "{_hex(40)}"\n'
            for i in range(6)
        ),
    )
    put(
        "notebooks/plots.ipynb",
        lambda: _notebook(
            [
                _code(
                    "plt.plot(losses)",
                    [
                        {
                            "output_type": "display_data",
                            "metadata": {},
                            "data": {
                                "image/png": _png(),
                                "text/plain": ["<Figure size 640x480 with 1 Axes>"],
                            },
                        },
                    ],
                ),
                _code(
                    "mlflow.start_run()",
                    [
                        {
                            "output_type": "stream",
                            "name": "stdout",
                            "text": [
                                f"run_id: {_hex(32)}\nexperiment: {_uuid()}\n"
                                f'artifact sha256: {_hex(64)}\ntokenizer = "bert-base-uncased"\n'
                                "max_tokens = 4096\n"
                            ],
                        },
                    ],
                ),
                _code(
                    f'thumb = "{base64.b64encode(secrets.token_bytes(240)).decode()}"\n'
                    f'model_checksum = "{_hex(64)}"\n'
                ),
            ]
        ),
    )
    put(
        "src/config.py",
        lambda: (
            'api_key = "vault://secret/llm/openai#api_key"\n'
            'DATABASE_URL = "postgresql://app:${PG_PASSWORD}@db:5432/app"\n'
            'password = os.environ["PG_PASSWORD"]\n'
            'token_url = "https://auth.example.com/oauth/token"\n'
            f'cache_key = "{_hex(64)}"\n'
            f'RUN_UUID = "{_uuid()}"\n'
            f'dataset_sha = "{_hex(40)}"\n'
            f'password_hash = "{_hex(64)}"\n'
        ),
    )
    put(
        "data/manifest.json",
        lambda: json.dumps(
            {
                "files": [
                    {
                        "name": f"part-{i}.parquet",
                        "sha256": _hex(64),
                        "etag": _hex(32),
                        "thumbnail": base64.b64encode(secrets.token_bytes(90)).decode(),
                    }
                    for i in range(4)
                ],
            },
            indent=2,
        ),
    )
    put(
        ".env.example",
        lambda: (
            "OPENAI_API_KEY=your-api-key-here\nHF_TOKEN=<your token>\nDB_PASSWORD=changeme\n"
            "DATABASE_URL=postgresql://user:password@localhost/db\n"
        ),
    )
    return files


FILLER = '''"""Feature pipeline module {i}."""

import logging
import numpy as np

log = logging.getLogger(__name__)


def normalise(batch: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    mean = batch.mean(axis=0)
    std = batch.std(axis=0) + eps
    return (batch - mean) / std


class Trainer:
    def __init__(self, model, lr: float = 3e-4, max_tokens: int = 4096) -> None:
        self.model = model
        self.lr = lr
        self.max_tokens = max_tokens

    def step(self, batch):
        loss = self.model(batch).loss
        log.info("step loss=%.4f lr=%g", loss, self.lr)
        return loss
'''


def make_corpus(root: Path, copies: int = 1, filler: int = 0) -> list[Planted]:
    """Write the corpus under ``root`` (``copies`` times, plus ``filler`` plain modules each)."""
    planted: list[Planted] = []
    for c in range(copies):
        prefix = f"copy{c}/" if copies > 1 else ""
        plant = _Plant()
        for rel, text in _files(plant).items():
            target = root / (prefix + rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        planted += [Planted(prefix + i.path, i.family, i.value) for i in plant.items]
        for i in range(filler):
            target = root / f"{prefix}src/pipeline/mod_{i}.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(FILLER.format(i=i) * 4, encoding="utf-8")
    return planted


def score(
    planted: list[Planted], found: list[tuple[str, int, str]], root: Path
) -> tuple[int, int, set[Planted]]:
    """(true positives, false positives, planted items missed) for findings (path, line, value).

    A finding matches a planted item in the same file when one value contains the other, or when
    the finding's line holds part of the planted value (detectors that report only a header).
    """
    by_file: dict[str, list[Planted]] = {}
    for item in planted:
        by_file.setdefault(item.path, []).append(item)
    lines_cache: dict[str, list[str]] = {}
    hit: set[Planted] = set()
    false_pos = 0
    for path, line, value in found:
        rel = (
            Path(path).resolve().relative_to(root.resolve()).as_posix()
            if Path(path).is_absolute()
            else path
        )
        matched = False
        for item in by_file.get(rel, []):
            if value and (value in item.value or item.value in value):
                hit.add(item)
                matched = True
        if not matched:
            text_lines = lines_cache.setdefault(
                rel, (root / rel).read_text(encoding="utf-8").splitlines()
            )
            text = text_lines[line - 1] if 0 < line <= len(text_lines) else ""
            for item in by_file.get(rel, []):
                head = json.dumps(item.value)[1:40]
                if item.family == "private-key" and ("PRIVATE KEY" in text) and head[:20] in text:
                    hit.add(item)
                    matched = True
        if not matched:
            false_pos += 1
    return len(hit), false_pos, set(planted) - hit
