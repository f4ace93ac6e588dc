"""``leaseline scan --fix``: credentials in notebooks' saved outputs rewritten to ``***``.

Only outputs change (stream text, ``execute_result``/``display_data`` MIME bundles, error values
and tracebacks): a key in a cell's *source* is the user's code and is only reported. Each value
is masked in every encoded form (:func:`leaseline.masking.encoded_forms`), the notebook is
checked with ``nbformat.validate`` before it is written (atomically, in nbformat's own layout:
one-space indent, a final newline), and a notebook with nothing to fix is not written at all, so
it stays the same byte for byte.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from .._config import Config
from .._exceptions import ConfigError, LeaselineError
from ..masking import Masker, _masked
from ._engine import Finding
from ._managed import managed_references
from ._sources import file_kind, iter_paths

__all__ = ["fix", "fix_notebook", "fix_notebooks", "managed_plaintexts"]


def _outputs(nb: Any) -> list[dict[str, Any]]:
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        return []
    found: list[dict[str, Any]] = []
    for cell in cells:
        if isinstance(cell, dict):
            found += [o for o in cell.get("outputs", []) or [] if isinstance(o, dict)]
    return found


def _validate(nb: Any, path: str) -> None:
    try:
        import nbformat
    except ImportError:
        raise ConfigError(
            "leaseline scan --fix checks each notebook with nbformat before writing it: "
            "pip install 'leaseline[notebook]'"
        ) from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise ConfigError(
            f"{path}: the notebook is not valid nbformat ({type(exc).__name__} at "
            f"{'/'.join(str(p) for p in exc.path) or 'top level'}): left as it was"
        ) from None


def fix_notebook(path: str, values: Iterable[str]) -> int:
    """Mask ``values`` in ``path``'s outputs; returns how many output fields changed (0: the
    file was not touched). Raises :class:`~leaseline.ConfigError` for a notebook that is not
    valid, before or after."""
    m = Masker()
    m.add_many(v for v in values if v)
    if not m.active:
        return 0
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if not m.contains_secret(text):
        return 0
    nb = json.loads(text)
    changed = 0
    for output in _outputs(nb):
        for name in ("text", "data", "evalue", "traceback"):
            if name in output:
                masked = _masked(output[name], m)
                if masked != output[name]:
                    output[name] = masked
                    changed += 1
    if not changed:
        return 0
    _validate(nb, path)
    data = json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".leaseline-fix-", suffix=".ipynb", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return changed


def fix_notebooks(values_by_path: dict[str, list[str]]) -> dict[str, int]:
    """:func:`fix_notebook` for each path; path -> output fields changed (only those > 0)."""
    fixed = {}
    for path, values in sorted(values_by_path.items()):
        count = fix_notebook(path, values)
        if count:
            fixed[path] = count
    return fixed


def managed_plaintexts(config: Config) -> tuple[list[str], list[tuple[str, str]]]:
    """The current values of the references the config manages (:func:`managed_references`),
    and (reference, error class) for those that could not be read. Held in memory only."""
    refs = managed_references(config)
    if not refs:
        return [], []
    from .._resolver import Resolver

    values: list[str] = []
    errors: list[tuple[str, str]] = []
    resolver = Resolver(config, handle_signals=False)
    try:
        for ref in refs:
            try:
                parsed = resolver.parse(ref)
                secret = resolver.get(parsed)
                fields = [parsed.field] if parsed.field else list(secret.fields)
                values += [secret.reveal(name) for name in fields]
            except LeaselineError as exc:
                errors.append((ref, type(exc).__name__))
    finally:
        resolver.close()
    return values, errors


def fix(
    paths: Sequence[str],
    findings: Iterable[Finding],
    *,
    excludes: Iterable[str] = (),
    managed: Sequence[str] = (),
) -> dict[str, int]:
    """Mask, in every notebook under ``paths``, the values of ``findings`` found in notebook
    outputs and the ``managed`` values; path -> output fields changed."""
    by_path: dict[str, list[str]] = {}
    for f in findings:
        if f.kind == "notebook" and f.location and " output " in f.location:
            by_path.setdefault(os.path.abspath(f.path), []).append(f.secret)
    if managed:
        for path in iter_paths(paths or ["."], excludes):
            if file_kind(path) == "notebook":
                by_path.setdefault(os.path.abspath(path), [])
    return fix_notebooks({p: [*v, *managed] for p, v in by_path.items()})
