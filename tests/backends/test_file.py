"""The ``file`` store against the real filesystem: roots, symlink races, unparseable files."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from leaseline import AccessDenied, LeaselineError, SecretNotFound, parse
from leaseline.backends import BackendContext
from leaseline.backends.file import FileBackend


def store(*roots: Path) -> FileBackend:
    context = BackendContext(clock=time.time, resolve=lambda ref: ref)
    return FileBackend("file", {"roots": [str(r) for r in roots]}, context)


def read(backend: FileBackend, path: Path | str, field: str | None = None) -> str:
    ref = parse(f"file://{path}" + (f"#{field}" if field else ""))
    fields = backend.read(ref).fields
    return fields[field or "value"]


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "secrets", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    return root, outside


def test_files_and_fields_under_a_root(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "token").write_text("t-" + secrets.token_hex(4) + "\n")
    (root / "db.json").write_text('{"password": "p", "port": 5432}')
    (root / "app.env").write_text("export A=1\nB='two'\n")
    (root / "crlf").write_bytes(b"line1\r\nline2\r\n")
    backend = store(root)
    assert read(backend, root / "token").startswith("t-")
    assert read(backend, root / "db.json", "port") == "5432"
    assert read(backend, root / "app.env", "B") == "two"
    assert read(backend, root / "crlf") == "line1\nline2"
    with pytest.raises(SecretNotFound, match="no file at"):
        read(backend, root / "missing")
    with pytest.raises(SecretNotFound, match="is a directory"):
        read(backend, root)


def test_kubernetes_style_symlinks_beneath_the_root_are_followed(
    layout: tuple[Path, Path],
) -> None:
    # a Kubernetes secret volume: key -> ..data/key, ..data -> ..2026_12_01_12_00_00.123
    root, _ = layout
    stamp = root / "..2026_12_01_12_00_00.123"
    stamp.mkdir()
    (stamp / "api_key").write_text("k8s-value\n")
    (root / "..data").symlink_to(stamp.name)
    (root / "api_key").symlink_to("..data/api_key")
    (root / "abs").symlink_to(root / "api_key")  # absolute, but beneath the root
    backend = store(root)
    assert read(backend, root / "api_key") == "k8s-value"
    assert read(backend, root / "abs") == "k8s-value"


def test_symlinks_out_of_the_root_are_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    (outside / "id").write_text(secrets.token_hex(8))
    (root / "rel").symlink_to("../elsewhere/id")
    (root / "abs").symlink_to(outside / "id")
    (root / "dir").symlink_to(outside)
    backend = store(root)
    for name in ("rel", "abs", "dir/id"):
        with pytest.raises(AccessDenied, match="symlink outside the allowed roots"):
            read(backend, root / name)
    with pytest.raises(AccessDenied, match="outside the allowed roots"):
        read(backend, outside / "id")


SWAPPER = r"""
import os, sys
root, outside, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
target, inner = os.path.join(root, "secret"), os.path.join(root, "dir")
print("ready", flush=True)
for i in range(rounds):
    # the file itself, then a directory on the way, become symlinks out of the root and back
    os.replace(os.path.join(root, ".link"), target)
    os.symlink(os.path.join(root, ".keep"), os.path.join(root, ".link"))
    os.replace(os.path.join(root, ".link"), target)
    os.symlink(os.path.join(outside, "secret"), os.path.join(root, ".link"))
    os.rename(inner, inner + ".real")
    os.symlink(outside, inner)
    os.unlink(inner)
    os.rename(inner + ".real", inner)
print("done", flush=True)
"""


def test_swapping_in_a_symlink_never_reads_outside_the_root(layout: tuple[Path, Path]) -> None:
    """19.7: check-then-open-by-name let 3 reads in 389 through; the walk by descriptor none."""
    root, outside = layout
    inside, leaked = "inside-" + secrets.token_hex(6), "outside-" + secrets.token_hex(6)
    (outside / "secret").write_text(leaked)
    (root / ".keep").write_text(inside)
    (root / "secret").symlink_to(root / ".keep")  # a link beneath the root: allowed
    (root / ".link").symlink_to(outside / "secret")
    (root / "dir").mkdir()
    (root / "dir" / "secret").write_text(inside)
    backend = store(root)
    rounds = 20_000
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(root), str(outside), str(rounds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert swapper.stdout is not None and swapper.stdout.readline() == "ready\n"
    seen = {"inside": 0, "outside": 0, "refused": 0}
    tries = 0
    try:
        while swapper.poll() is None and tries < 100_000:  # bounded in count
            for name in ("secret", "dir/secret"):
                tries += 1
                try:
                    value = read(backend, root / name)
                except (AccessDenied, SecretNotFound, OSError):  # OSError: the old code's
                    seen["refused"] += 1
                    continue
                seen["inside" if value == inside else "outside"] += 1
    finally:
        swapper.kill()
        swapper.wait(timeout=30)
        swapper.stdout.close()
    assert seen["outside"] == 0, f"{seen['outside']} read(s) in {tries} left the root"
    assert seen["inside"] > 0 and seen["refused"] > 0, seen  # the race really ran both ways


@pytest.mark.parametrize(
    ("name", "content", "kind", "where"),
    [
        ("db.yaml", b"user: app\npassword: [%(secret)s\n", "YAML", "line 3"),
        ("db.yml", b"user: app\n  password: %(secret)s\n", "YAML", "line 2"),
        ("db.json", b'{"user": "app",\n "password": %(secret)s}', "JSON", "line 2"),
        ("app.env", b"A=1\n%(secret)s\n", ".env", "line 2"),
        ("key.der", b"ok\n\xff\xfe%(secret)s", "UTF-8 text", "line 2, byte offset 3"),
    ],
)
def test_unparseable_files_name_file_and_line_never_content(
    layout: tuple[Path, Path], name: str, content: bytes, kind: str, where: str
) -> None:
    """18.7: a malformed YAML file put its content in the error; a binary one was 'internal'."""
    root, _ = layout
    secret = "pw-" + secrets.token_hex(8)
    path = root / name
    path.write_bytes(content.replace(b"%(secret)s", secret.encode()))
    field = None if name.endswith(".der") else "password"
    with pytest.raises(LeaselineError) as info:
        read(store(root), path, field)
    message = str(info.value)
    assert message.startswith(f"file://{path}: {path} is not valid {kind} ({where}")
    assert secret not in message and secret[3:11] not in message
    assert "app" not in message.replace("app.env", "")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_fifo_is_refused_without_blocking(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    os.mkfifo(root / "pipe")
    with pytest.raises(SecretNotFound, match="not a regular file"):
        read(store(root), root / "pipe")


# -- issue 21: the rest of the store's behaviour, one test each -----------------------------------


def test_roots_from_a_path_list_and_bad_roots_are_config_errors(
    layout: tuple[Path, Path],
) -> None:
    from leaseline import ConfigError

    root, outside = layout
    (outside / "x").write_text("in-second-root")
    context = BackendContext(clock=time.time, resolve=lambda ref: ref)
    both = FileBackend("file", {"roots": f"{root}{os.pathsep}{outside}"}, context)
    assert read(both, outside / "x") == "in-second-root"
    for bad in (5, [str(root), 7], {"a": 1}):
        with pytest.raises(ConfigError, match=r"\[stores.files\] roots: expected a list"):
            FileBackend("files", {"roots": bad}, context)
    with pytest.raises(ConfigError, match="unknown option"):
        FileBackend("file", {"root": str(root)}, context)


def test_default_roots_are_the_mounted_secret_directories(tmp_path: Path) -> None:
    backend = FileBackend("file", {}, BackendContext(clock=time.time, resolve=lambda ref: ref))
    (tmp_path / "k").write_text("v")
    with pytest.raises(AccessDenied) as info:
        read(backend, tmp_path / "k")
    for default in ("/run/secrets", "/mnt/secrets-store"):
        assert os.path.realpath(default) in str(info.value)
    assert "add its directory to [stores.file] roots" in str(info.value)


def test_a_root_named_through_a_symlink_is_the_same_root(layout: tuple[Path, Path]) -> None:
    # /var/run/secrets names /run/secrets: a reference may use either spelling
    root, outside = layout
    alias = outside / "alias"
    alias.symlink_to(root)
    (root / "token").write_text("via-either")
    backend = store(alias)
    assert read(backend, alias / "token") == "via-either"
    assert read(backend, root / "token") == "via-either"


def test_symlink_loops_and_files_used_as_directories_are_not_found(
    layout: tuple[Path, Path],
) -> None:
    root, _ = layout
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    (root / "plain").write_text("x")
    backend = store(root)
    with pytest.raises(SecretNotFound, match="cannot open"):
        read(backend, root / "a")
    with pytest.raises(SecretNotFound, match=r"cannot open .*plain/inner"):
        read(backend, root / "plain" / "inner")


def test_the_last_component_is_opened_with_o_nofollow(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open of the walk carries O_NOFOLLOW: the kernel, not a check before it, refuses to
    follow a link, so the walk alone decides where a symlink may lead."""
    from leaseline.backends import file as file_module

    root, _ = layout
    (root / "d").mkdir()
    (root / "d" / "f").write_text("x")
    flags: list[int] = []
    real_open = os.open

    def spy(path: str, flag: int, *args: object, **kwargs: object) -> int:
        flags.append(flag)
        return real_open(path, flag, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(file_module.os, "open", spy)
    assert read(store(root), root / "d" / "f") == "x"
    assert len(flags) == 3  # the root, then d and f relative to their parents
    assert all(f & os.O_NOFOLLOW for f in flags[1:])


@pytest.mark.parametrize(
    ("name", "content", "field", "expected"),
    [
        (
            "db.json",
            '{"port": 5432, "tags": ["a", "b"], "tls": {"on": true}}',
            "tags",
            '["a", "b"]',
        ),
        ("db.json", '{"port": 5432, "tls": {"on": true}}', "tls", '{"on": true}'),
        ("db.yaml", "user: app\nport: 5432\n", "port", "5432"),
        ("db.yml", "user: app\n", "user", "app"),
        ("noext", '{"k": "from-json"}\n', "k", "from-json"),
        ("list.json", "[1, 2]\n", None, "[1, 2]"),  # not a mapping: one raw value
        ("raw.txt", "line\n\n", None, "line\n"),  # only the last newline is stripped
        (".env", '# c\n\nexport K="q v"\n', "K", "q v"),
    ],
)
def test_formats(
    layout: tuple[Path, Path], name: str, content: str, field: str | None, expected: str
) -> None:
    root, _ = layout
    (root / name).write_text(content)
    assert read(store(root), root / name, field) == expected


def test_version_and_metadata_follow_the_file(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    path = root / "token"
    path.write_text("one")
    backend = store(root)
    ref = parse(f"file://{path}")
    first = backend.read(ref).version
    assert backend.read(ref).version == first  # unchanged file, same version
    tmp = root / ".token.new"
    tmp.write_text("two-longer")
    os.replace(tmp, path)  # a CSI driver's swap: new inode, size and mtime
    assert backend.read(ref).version != first
    meta = backend.metadata(ref)
    assert meta.ref == f"file://{path}" and meta.updated_at == os.stat(path).st_mtime
    with pytest.raises(SecretNotFound):
        backend.metadata(parse(f"file://{root}/absent"))
    with pytest.raises(AccessDenied):
        backend.metadata(parse("file:///etc/hostname"))


def test_the_resolver_picks_up_a_rotated_file_after_refresh_after(
    layout: tuple[Path, Path], canary: object
) -> None:
    from leaseline import Resolver
    from leaseline._config import Config

    root, _ = layout
    first, second = canary.new("f1"), canary.new("f2")  # type: ignore[attr-defined]
    path = root / "api_key"
    path.write_text(first)
    now = [1000.0]
    config = Config.from_mapping({"stores": {"file": {"roots": [str(root)]}}})
    resolver = Resolver(config, clock=lambda: now[0], handle_signals=False)
    try:
        assert resolver.resolve(f"file://{path}") == first
        path.write_text(second)
        assert resolver.resolve(f"file://{path}") == first  # inside refresh_after: cached
        now[0] += FileBackend.default_refresh_after + 1
        seen = resolver.resolve(f"file://{path}")
        deadline = time.monotonic() + 30
        while seen != second and time.monotonic() < deadline:  # re-read in the background
            time.sleep(0.01)
            seen = resolver.resolve(f"file://{path}")
        assert seen == second
    finally:
        resolver.close()
        path.unlink()
