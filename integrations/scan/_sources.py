"""What gets scanned: files on disk or in the git index, cut into text segments.

A plain file is one segment. A notebook is parsed as a notebook: every cell's source and every
output (stream text, ``execute_result``/``display_data`` text-like MIME bundles, error name, value
and traceback) is its own segment, labelled ``cell 3 output 1 (error)``; base64 images are not
text and are skipped, which is where generic scanners raise most of their false alarms. The
notebook's metadata (papermill's ``parameters``) and each cell's are segments too
(``notebook metadata``, ``cell 3 metadata``). An ``execute_result`` of a cell whose last line
names a credential (``os.environ['HF_TOKEN']``) is read again as ``HF_TOKEN = <its repr>``.

Where a value hides behind an encoding, a derived segment holds it decoded: XML with its
entities unescaped, escaped JSON strings decoded, concatenated string literals joined, base64
blobs that decode to text (bounded: 200 candidates a segment, 64 KiB a blob, 2000 decoded JSON
lines a file).

ML run folders are plain YAML to the scanner: Hydra's ``.hydra/config.yaml`` (the composed
config, overrides applied) and ``.hydra/overrides.yaml`` (the command line's ``key=value``
overrides). A Weights & Biases run's ``files/config.yaml`` (a top-level ``_wandb:`` key) nests
each value one level down (``db_password:`` / ``value: ...``): besides the whole file, each
``NAME: {value: ...}`` entry is also scanned as ``NAME: ...``, so a value is judged by the name
it was logged under (location ``W&B config NAME``).

Why ~410 lines: every reader here produces the same thing (segments with their locations) from
one file's text, and the derived readings need the segments the format readers made; split by
format, each part would import the others' segment rules back.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
import os
import re
import string
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Segment", "SourceFile", "file_kind", "iter_paths", "segments", "staged_files"]

SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".ipynb_checkpoints",
        ".eggs",
    }
)
BINARY_SUFFIXES = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".ico",
        ".pdf",
        ".zip",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".whl",
        ".so",
        ".dylib",
        ".dll",
        ".exe",
        ".pyc",
        ".pt",
        ".pth",
        ".bin",
        ".safetensors",
        ".onnx",
        ".h5",
        ".pkl",
        ".parquet",
        ".npy",
        ".npz",
        ".tar",
        ".woff",
        ".woff2",
        ".ttf",
    }
)
MAX_BYTES = 5 * 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_WANDB = re.compile(r"(?m)^_wandb:[ \t]*$")
_WANDB_ENTRY = re.compile(
    r"(?m)^(?P<name>[A-Za-z_][\w.\-]*):[ \t]*\r?\n(?:[ \t]+desc:.*\r?\n)?"
    r"[ \t]+value:[ \t]*(?P<value>[^\s#][^\r\n]*?)[ \t]*$"
)


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of text with where it sits: ``first_line`` is its first line in the file."""

    text: str
    location: str | None = None
    first_line: int = 1
    #: notebook segments: line numbers are found in the raw JSON afterwards
    in_json: bool = False
    #: a second reading of the segment before it (an output read as the value of the name its
    #: cell shows): only what that one did not find counts
    again: bool = False


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # as reported (relative to the scan root when under it)
    data: bytes


#: a cell whose last line shows one value: ``os.environ['HF_TOKEN']``, ``os.getenv("API_KEY")``,
#: ``settings.db_password``, ``API_KEY``; its ``execute_result`` is that value's repr
_SHOWN = re.compile(
    r"""(?:[\w.]+\[\s*['"](?P<key>[\w.\-]+)['"]\s*\]"""
    r"""|[\w.]*(?:getenv|environ\.get|get_secret|getpass)\(\s*['"](?P<arg>[\w.\-]+)['"][^()]*\)"""
    r"""|(?P<name>[A-Za-z_][\w.]*))\s*;?"""
)
_NEWLINE_ENTITY = re.compile(r"&#(?:0*1[03]|[xX]0*[aAdD]);")
_XML_SUFFIXES = frozenset(
    {".xml", ".config", ".csproj", ".vbproj", ".props", ".targets", ".plist", ".xaml", ".resx"}
)


#: tools' own settings files, INI-shaped (``password = …`` unquoted)
_INI_NAMES = frozenset(
    {".pypirc", ".sentryclirc", ".databrickscfg", ".npmrc", ".gitconfig", ".s3cfg", ".boto"}
)


def file_kind(path: str) -> str:
    """``notebook``, ``docker``, ``env``, ``yaml``, ``ini``, ``shell``, ``make``, ``json``,
    ``xml``, ``csv`` or ``text``."""
    name = os.path.basename(path).lower()
    suffix = os.path.splitext(name)[1]
    if suffix == ".ipynb":
        return "notebook"
    if name in {"makefile", "gnumakefile"} or suffix == ".mk":
        return "make"
    if suffix == ".json":
        return "json"
    if suffix in _XML_SUFFIXES:
        return "xml"
    if name.startswith(("dockerfile", "containerfile")) or suffix in {".dockerfile"}:
        return "docker"
    if name == ".env" or name.startswith(".env.") or suffix == ".env" or name == ".netrc":
        return "env"
    if suffix in {".yaml", ".yml"}:
        return "yaml"
    if suffix in {".ini", ".cfg", ".conf", ".properties", ".toml"} or name in _INI_NAMES:
        return "ini"
    if suffix in {".sh", ".bash", ".zsh"} or name in {".bashrc", ".profile", ".envrc"}:
        return "shell"
    if suffix in {".csv", ".tsv"}:
        return "csv"
    return "text"


def _excluded(rel: str, excludes: Iterable[str]) -> bool:
    return any(
        fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(os.path.basename(rel), pat) for pat in excludes
    )


def iter_paths(paths: Iterable[str], excludes: Iterable[str] = ()) -> Iterator[str]:
    """Every scannable file under ``paths`` (files are taken as given, directories walked)."""
    excludes = tuple(excludes)
    for root in paths:
        if os.path.isfile(root):
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if os.path.splitext(name)[1].lower() in BINARY_SUFFIXES:
                    continue
                if excludes and _excluded(os.path.relpath(full, root), excludes):
                    continue
                yield full


def read_file(path: str) -> SourceFile | None:
    """The file's bytes, or ``None`` for binary, unreadable or oversized files."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_BYTES or b"\0" in data[:8192]:
        return None
    return SourceFile(path, data)


def staged_files(repo: str = ".") -> Iterator[SourceFile]:
    """Files added or modified in the git index of ``repo``, with their *staged* content."""
    names = subprocess.run(
        ["git", "-C", repo, "diff", "--cached", "--name-only", "-z", "--diff-filter=ACMR"],
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    wanted = [n.decode() for n in names if n]
    wanted = [n for n in wanted if os.path.splitext(n)[1].lower() not in BINARY_SUFFIXES]
    if not wanted:
        return
    spec = "".join(f":{n}\n" for n in wanted).encode()
    out = subprocess.run(
        ["git", "-C", repo, "cat-file", "--batch"], input=spec, check=True, capture_output=True
    ).stdout
    pos = 0
    for name in wanted:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) < 3 or header[1] == b"missing":
            continue
        size = int(header[2])
        data = out[pos : pos + size]
        pos += size + 1
        if size <= MAX_BYTES and b"\0" not in data[:8192]:
            yield SourceFile(name, data)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def _is_text_mime(mime: str) -> bool:
    return (
        mime.startswith("text/")
        or mime in {"application/json", "application/javascript", "image/svg+xml"}
        or mime.endswith("+json")
    )


def notebook_segments(nb: Any) -> Iterator[Segment]:
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        # nbformat 3 keeps cells under worksheets
        sheets = nb.get("worksheets", []) if isinstance(nb, dict) else []
        cells = [c for ws in sheets if isinstance(ws, dict) for c in ws.get("cells", [])]
    # metadata (papermill's parameters, tags, anything a tool stored) as the JSON it is
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    if isinstance(meta, dict) and meta:
        yield Segment(json.dumps(meta, indent=1), "notebook metadata", in_json=True)
    for ci, cell in enumerate(cells, 1):
        if not isinstance(cell, dict):
            continue
        kind = cell.get("cell_type", "code")
        source = cell.get("source", cell.get("input", ""))
        yield Segment(_text(source), f"cell {ci} ({kind}) source", in_json=True)
        meta = cell.get("metadata")
        if isinstance(meta, dict) and meta:
            yield Segment(json.dumps(meta, indent=1), f"cell {ci} metadata", in_json=True)
        for oi, out in enumerate(cell.get("outputs", []) or [], 1):
            if not isinstance(out, dict):
                continue
            where = f"cell {ci} output {oi}"
            otype = out.get("output_type", "")
            if otype == "stream" or "text" in out:
                yield Segment(
                    _text(out.get("text", "")), f"{where} ({out.get('name', otype)})", in_json=True
                )
            if otype == "error" or "traceback" in out:
                parts = [str(out.get("ename", "")), str(out.get("evalue", ""))]
                parts += [_ANSI.sub("", str(t)) for t in out.get("traceback", []) or []]
                yield Segment("\n".join(parts), f"{where} (error)", in_json=True)
            data = out.get("data")
            if isinstance(data, dict):
                for mime, value in data.items():
                    if _is_text_mime(mime):
                        yield Segment(_text(value), f"{where} ({otype} {mime})", in_json=True)
                shown = _shown_name(_text(source)) if otype == "execute_result" else None
                plain = _text(data.get("text/plain", ""))
                if shown and plain and "\n" not in plain.strip():
                    # `os.environ['AZURE_TOKEN']` shown as `'…'`: the value of that name
                    where = f"{where} ({otype} text/plain)"
                    yield Segment(f"{shown} = {plain.strip()}", where, in_json=True, again=True)


def _shown_name(source: str) -> str | None:
    """The name of what a cell's last line shows (its ``execute_result``), if it names one."""
    lines = [line for line in source.splitlines() if line.strip()]
    m = _SHOWN.fullmatch(lines[-1].strip()) if lines else None
    if m is None:
        return None
    name = m.group("key") or m.group("arg") or m.group("name")
    return name.rsplit(".", 1)[-1] if name else None


def segments(src: SourceFile) -> tuple[str, str, list[Segment]]:
    """(kind, decoded text, segments) for one file.

    Besides the text itself: XML with its entities unescaped (instead of the raw text), JSON
    string values with escapes decoded, lines whose string literals are concatenated
    (``'sk-' . 'rest'``, ``"sk-" + "rest"``) joined, and plausible base64 blobs that decode to
    text, each decoded (bounded: see :func:`decoded_segments`).
    """
    text = src.data.decode("utf-8", "replace")
    kind = file_kind(src.path)
    if kind == "notebook":
        try:
            nb = json.loads(text)
        except ValueError:
            return "text", text, [Segment(text), *decoded_segments(text)]
        segs = list(notebook_segments(nb))
        derived = [d for seg in segs for d in decoded_segments(seg.text, text, seg.location)]
        return kind, text, segs + derived
    if kind == "xml" and "&" in text:
        # a newline entity (&#10;) becomes a space, so the lines stay the file's
        base = [Segment(html.unescape(_NEWLINE_ENTITY.sub(" ", text)))]
    elif kind == "yaml" and _WANDB.search(text):
        base = [Segment(text), *wandb_segments(text)]
    else:
        base = [Segment(text)]
    if kind == "json":
        base += json_string_segments(text)
    return kind, text, base + list(decoded_segments(base[0].text))


def wandb_segments(text: str) -> Iterator[Segment]:
    """A W&B ``config.yaml``'s ``NAME:`` / ``value: X`` entries as ``NAME: X`` segments."""
    for m in _WANDB_ENTRY.finditer(text):
        line = text.count("\n", 0, m.start("value")) + 1
        yield Segment(
            f"{m.group('name')}: {m.group('value')}", f"W&B config {m.group('name')}", line
        )


# a JSON string literal with at least one escape in it
_JSON_ESCAPED = re.compile(r'"(?:[^"\\\n]|\\.)*\\(?:[^"\\\n]|\\.)*"')
_MAX_DECODED = 2000  # lines of decoded strings per file


def json_string_segments(text: str) -> Iterator[Segment]:
    r"""Each line of each escaped JSON string, decoded (``{\"api_key\": …}``, ``\n``, ``\/``),
    at the line of its literal."""
    budget = _MAX_DECODED
    for m in _JSON_ESCAPED.finditer(text):
        try:
            value = json.loads(m.group())
        except ValueError:
            continue
        line = text.count("\n", 0, m.start()) + 1
        for part in str(value).splitlines():
            if budget <= 0:
                return
            budget -= 1
            yield Segment(part, "JSON string", line)


_CONCAT = re.compile(r"""(["'])[ \t]*[.+][ \t]*\1""")
#: the same, one expression per quote: each starts with a literal, which ``re`` looks for at C
#: speed (the two-quote class and back-reference try every quote in the text)
_CONCAT_BY_QUOTE = tuple(re.compile(q + r"[ \t]*[.+][ \t]*" + q) for q in "'\"")
_MAX_BLOBS = 200  # candidates looked at per segment
_MAX_BLOB = 64 * 1024
_MIN_BLOB = 40
_PRINTABLE = re.compile(r"[\t\n\r\x20-\x7e]+")
#: base64 (standard and URL-safe) characters to ``a``, anything else to a blank: a blob is a run
#: of ``a`` (``bytes.find`` at C speed, where the expression tried every position)
_B64_CHARS = frozenset((string.ascii_letters + string.digits + "+/_-").encode())
_B64_TABLE = bytes(ord("a") if i in _B64_CHARS else ord(" ") for i in range(256))
_B64_RUN = b"a" * _MIN_BLOB


def concat_lines(text: str) -> list[int]:
    """Where the lines start that join string literals (``'sk-' . 'rest'``, ``"a" + "b"``), in
    order, at most ``_MAX_BLOBS``: the lines ``_CONCAT`` matches in."""
    starts = {
        text.rfind("\n", 0, m.start()) + 1 for pat in _CONCAT_BY_QUOTE for m in pat.finditer(text)
    }
    return sorted(starts)[:_MAX_BLOBS]


def b64_blobs(text: str) -> Iterator[tuple[int, int]]:
    """Spans of ``text`` that may be base64: a run of at least 40 base64 characters (both
    alphabets) and up to two ``=``; what ``(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}``
    finds, in order."""
    # one byte per character (anything not ASCII is "?", not a base64 character): str offsets
    marks = text.encode("ascii", "replace").translate(_B64_TABLE)
    size = len(marks)
    pos = 0
    while True:
        start = marks.find(_B64_RUN, pos)  # a run's start: any run before it is shorter
        if start < 0:
            return
        end = marks.find(b" ", start + _MIN_BLOB)
        if end < 0:
            end = size
        stop = end
        while stop < size and stop - end < 2 and text[stop] == "=":
            stop += 1
        yield start, stop
        pos = end


def _b64_text(blob: str) -> str | None:
    """The text ``blob`` decodes to, when it is base64 of printable ASCII; else ``None``."""
    body = blob.rstrip("=")
    if len(body) % 4 == 1 or len(blob) > _MAX_BLOB:
        return None
    if "-" in body or "_" in body:
        if "+" in body or "/" in body:
            return None
        body = body.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        out = raw.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    return out if _PRINTABLE.fullmatch(out) else None


def decoded_segments(
    text: str, raw: str | None = None, where: str | None = None
) -> Iterator[Segment]:
    """Derived segments of ``text``: concatenated literals joined, base64 blobs decoded.

    ``raw`` is the notebook JSON a notebook segment (at ``where``) came from: its lines are
    found there.
    """
    joins = concat_lines(text) if raw is None else []
    if joins and ("' " in text or '" ' in text or "'." in text or '"+' in text):
        # (the search first: it finds nothing in most files, and is faster than these four)
        for start in joins:
            end = text.find("\n", start)
            joined = _CONCAT.sub("", text[start : end if end >= 0 else len(text)])
            yield Segment(joined, None, text.count("\n", 0, start) + 1)
    line, counted = 1, 0  # line numbers counted on from the last blob's
    for n, (start, end) in enumerate(b64_blobs(text)):
        if n >= _MAX_BLOBS:
            return
        blob = text[start:end]
        decoded = _b64_text(blob)
        if decoded is None:
            continue
        if raw is None:
            line += text.count("\n", counted, start)
            counted = start
        else:
            pos = raw.find(blob[:_MIN_BLOB])
            line = raw.count("\n", 0, pos) + 1 if pos >= 0 else 1
        yield Segment(decoded, f"{where}, base64-decoded" if where else "base64-decoded", line)
