"""``leaseline scan --mlflow TRACKING_URI``: credentials in what MLflow runs saved.

MLflow keeps every run's params and tags forever, and its artefacts beside them: a key logged
with ``mlflow.log_param("api_key", ...)`` or in a logged ``config.yaml`` is readable by everyone
who can read the experiment. This reads, through ``MlflowClient`` (the user's own MLflow auth:
``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, a token, or leaseline's request-auth plugin), each
run's params and tags, and its small text artefacts (``MLmodel`` and ``.yaml``/``.json``/
``.txt``... files up to ``max_bytes``), and runs the file scanner's detectors over them. With
``[audit] hmac_key`` configured, every param and tag value, and every word of an artefact, is
also compared by HMAC with the current values of the managed references (a managed value need
not look like a key to be found). Findings name the experiment, the run and the key or artefact
path (``mlflow:EXPERIMENT/RUN_ID [param api_key]``); never the tracking URI (it may hold a
password) and never a value.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .._config import Config, load_config
from .._exceptions import ConfigError
from ._engine import Finding, Scanner, _sha1
from ._managed import ManagedValues
from ._rules import redact

if TYPE_CHECKING:
    from .._resolver import Resolver
    from . import ScanResult

__all__ = ["MAX_ARTIFACT_BYTES", "scan_mlflow"]

MAX_ARTIFACT_BYTES = 1024 * 1024
#: artefacts per run read at most (a run with thousands of files is a data set, not a config)
MAX_ARTIFACTS = 500
TEXT_SUFFIXES = frozenset(
    {".yaml", ".yml", ".json", ".txt", ".cfg", ".ini", ".toml", ".env", ".md", ".log", ".py"}
)
TEXT_NAMES = frozenset({"MLmodel", "Dockerfile", "requirements.txt", ".env"})
_WORD = re.compile(r"[^\s'\"`=:,;{}\[\]()<>]{8,}")


@dataclass(frozen=True)
class _Text:
    """One piece of a run to scan: where it is (experiment, run, what) and its text."""

    experiment: str
    run_id: str
    what: str  # "param api_key", "tag team", "artifact configs/train.yaml"
    text: str
    as_path: str  # the file name the detectors see (its kind picks the rules)
    whole: bool  # a param or tag: the whole value is a candidate for the managed match

    @property
    def path(self) -> str:
        return f"mlflow:{self.experiment}/{self.run_id}"


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            "leaseline scan --mlflow reads runs through MLflow: pip install 'leaseline[mlflow]'"
        ) from None
    return MlflowClient(tracking_uri=uri)


def _paged(call: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    token = None
    while True:
        page = call(*args, page_token=token, **kwargs)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _experiments(client: Any, names: Sequence[str]) -> list[Any]:
    from mlflow.entities import ViewType

    if not names:
        return list(_paged(client.search_experiments, view_type=ViewType.ALL, max_results=1000))
    found = []
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise ConfigError(
                f"no experiment named {name!r} on the tracking server (or this user may not "
                "read it): `mlflow experiments search` lists them"
            )
        found.append(exp)
    return found


def _is_text(path: str) -> bool:
    name = os.path.basename(path)
    return name in TEXT_NAMES or os.path.splitext(name)[1].lower() in TEXT_SUFFIXES


def _artifacts(client: Any, run_id: str, max_bytes: int) -> Iterator[tuple[str, int]]:
    """(path, size) of each small text artefact of the run, breadth first."""
    queue: list[str | None] = [None]
    seen = 0
    while queue and seen < MAX_ARTIFACTS:
        for info in client.list_artifacts(run_id, queue.pop(0)):
            if info.is_dir:
                queue.append(info.path)
            elif _is_text(info.path) and (info.file_size or 0) <= max_bytes:
                seen += 1
                yield info.path, int(info.file_size or 0)


def _texts(client: Any, experiments: list[Any], max_bytes: int) -> Iterator[_Text]:
    from mlflow.entities import ViewType

    with tempfile.TemporaryDirectory(prefix="leaseline-mlflow-") as tmp:
        for exp in experiments:
            runs = _paged(
                client.search_runs,
                [exp.experiment_id],
                run_view_type=ViewType.ALL,
                max_results=1000,
            )
            for run in runs:
                run_id = run.info.run_id
                for kind, items in (("param", run.data.params), ("tag", run.data.tags)):
                    for key, value in sorted(items.items()):
                        line = f"{key}: {json.dumps(str(value))}\n"
                        yield _Text(exp.name, run_id, f"{kind} {key}", line, "run.yaml", True)
                for path, _size in _artifacts(client, run_id, max_bytes):
                    local = client.download_artifacts(run_id, path, dst_path=tmp)
                    try:
                        with open(local, "rb") as fh:
                            data = fh.read(max_bytes + 1)
                    finally:
                        os.unlink(local)
                    if len(data) > max_bytes or b"\0" in data[:8192]:
                        continue
                    name = os.path.basename(path)
                    text = data.decode("utf-8", "replace")
                    as_path = "MLmodel.yaml" if name == "MLmodel" else name
                    yield _Text(exp.name, run_id, f"artifact {path}", text, as_path, False)


def _managed_finding(piece: _Text, value: str, ref: str, line: int) -> Finding:
    return Finding(
        path=piece.path,
        line=line,
        rule="managed-value",
        name="Managed secret value",
        family="managed",
        kind="mlflow",
        location=piece.what,
        redacted=redact(value),
        hashed_secret=_sha1(value),
        secret=value,
        managed_ref=ref,
    )


def _candidates(piece: _Text) -> Iterator[tuple[str, int]]:
    if piece.whole:
        value = json.loads(piece.text.split(": ", 1)[1])
        yield value, 1
        return
    for lineno, line in enumerate(piece.text.splitlines(), 1):
        for word in _WORD.findall(line):
            yield word, lineno


def scan_mlflow(
    uri: str,
    experiments: Sequence[str] = (),
    *,
    config: Config | None = None,
    baseline: str | None = None,
    managed: bool = True,
    max_bytes: int = MAX_ARTIFACT_BYTES,
    resolver: Resolver | None = None,
    confidence: str | None = None,
) -> ScanResult:
    """Scan the runs of ``experiments`` (default: all) on the tracking server at ``uri``.

    Raises :class:`~leaseline.ConfigError` for a missing MLflow, an unknown experiment or a bad
    config; MLflow's own errors (server down, denied) propagate as ``MlflowException``.
    """
    from . import report

    cfg = config if config is not None else load_config()
    client = _client(uri)
    values = _managed_values(cfg, resolver) if managed else None
    engine = Scanner()
    found: list[Finding] = []
    scanned = 0
    for piece in _texts(client, _experiments(client, experiments), max_bytes):
        scanned += 1
        hits = [
            replace(f, path=piece.path, kind="mlflow", location=piece.what)
            for f in engine.scan_text(piece.as_path, piece.text)
        ]
        if values is not None:
            hits = [replace(f, managed_ref=values.match(f.secret)) for f in hits]
            known = {f.secret for f in hits}
            for candidate, line in _candidates(piece):
                ref = values.match(candidate) if candidate not in known else None
                if ref is not None:
                    known.add(candidate)
                    hits.append(_managed_finding(piece, candidate, ref, line))
        found += hits
    # managed values are matched above (run texts hold them outside any rule's shape too)
    result = report(found, scanned, cfg, baseline=baseline, confidence=confidence, managed=False)
    result.engine = engine.engine
    if values is not None:
        result.managed_errors = values.errors
        result.managed_checked = len(values)
    return result


def _managed_values(cfg: Config, resolver: Resolver | None) -> ManagedValues | None:
    if not cfg.section("audit").get("hmac_key"):
        return None
    from .._resolver import Resolver

    res = resolver if resolver is not None else Resolver(cfg, handle_signals=False)
    try:
        return ManagedValues.from_resolver(res)
    finally:
        if resolver is None:
            res.close()
