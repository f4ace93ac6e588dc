"""Self-test of the canary plugin (tests/canary.py): leaks are caught, values never shown."""

from __future__ import annotations

import os
import re
import textwrap

import pytest

from tests.canary import encodings

pytest_plugins = ["pytester"]

CANARY_RE = re.compile(r"leakprobe-[0-9a-f]{24}")


def run_inner(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=textwrap.dedent(body))
    result = pytester.runpytest_subprocess("-p", "tests.canary", "-p", "no:cacheprovider", "-rA")
    output = result.stdout.str() + result.stderr.str()
    assert not CANARY_RE.search(output), "the canary value itself was printed"
    return result


@pytest.fixture(autouse=True)
def _importable(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # the inner run (a subprocess) must import tests.canary from this checkout
    path = [str(request.config.rootpath), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))


def test_leak_in_stdout_fails(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        def test_leak(canary):
            print("token is", canary.new("leakprobe"))
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*canary #1 *found verbatim in the test's captured stdout call*"])
    result.stdout.fnmatch_lines(["*token is [[]CANARY REDACTED[]]*"])


@pytest.mark.parametrize(
    ("expr", "form"),
    [
        ("base64.b64encode(b'xy' + v.encode()).decode()", "base64-encoded"),
        ("base64.urlsafe_b64encode(b'z' + v.encode()).decode()", "base64*-encoded"),
        ("v.encode().hex()", "hex-encoded"),
        ("urllib.parse.quote('k=' + v)", "verbatim"),
    ],
)
def test_encoded_leaks_fail(pytester: pytest.Pytester, expr: str, form: str) -> None:
    result = run_inner(
        pytester,
        f"""
        import base64, urllib.parse, sys
        def test_leak(canary):
            v = canary.new("leakprobe")
            sys.stderr.write("debug: " + {expr} + "\\n")
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*found {form} in the test's captured stderr call*"])


def test_leak_in_log_tmp_path_and_watched_file(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import logging
        def test_log(canary):
            logging.getLogger("x").warning("conn %s", canary.new("leakprobe"))

        def test_tmp(canary, tmp_path):
            (tmp_path / "dag.json").write_text('{"pw": "%s"}' % canary.new("leakprobe"))

        def test_watched(canary, tmp_path_factory):
            out = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
            canary.watch(out)
            out.write_text("env: " + canary.new("leakprobe"))

        def test_clean_afterwards(canary):
            assert canary.new("leakprobe")
        """,
    )
    result.assert_outcomes(failed=3, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*found verbatim in the test's captured log call*",
            "*found verbatim in tmp_path file */dag.json*",
            "*found verbatim in watched file */pipeline.yaml*",
        ]
    )


def test_leak_in_failure_text_is_redacted(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        def test_fails(canary):
            v = canary.new("leakprobe")
            assert v == "something else"
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*found verbatim in the failure text (call)*", "*original failure, canaries redacted*"]
    )


def test_leak_in_fixture_teardown_errors(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import pytest

        @pytest.fixture
        def noisy(canary):
            v = canary.new("leakprobe")
            yield v
            print("closing", v)

        def test_uses(noisy):
            assert noisy
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*found verbatim in the test's captured stdout teardown*"])


def test_no_leak_passes(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import hashlib
        def test_ok(canary, tmp_path):
            v = canary.new("leakprobe")
            print("sha256:", hashlib.sha256(v.encode()).hexdigest())
            (tmp_path / "ref.txt").write_text("vault://secret/llm/openai#api_key")
        """,
    )
    result.assert_outcomes(passed=1)


def test_base64_needles_match_at_every_alignment() -> None:
    import base64

    value = "canary-0123456789abcdef01234567"
    needles = [n for n, form in encodings(value) if form == "base64-encoded"]
    for prefix in (b"", b"a", b"ab", b"abc"):
        blob = base64.b64encode(prefix + value.encode() + b"tail")
        assert any(n in blob for n in needles), prefix


def test_leak_in_log_record_extra_fails(pytester: pytest.Pytester) -> None:
    """A value in ``extra=`` is not in the captured log text, but a JSON formatter prints it."""
    result = run_inner(
        pytester,
        """
        import logging
        def test_extra(canary):
            logging.getLogger("app").warning("login ok", extra={"password": canary.new("leakprobe")})

        def test_nested_extra(canary):
            v = canary.new("leakprobe")
            logging.getLogger("app.db").error("connect", extra={"ctx": {"dsn": f"pg://u:{v}@h"}})

        def test_extra_in_fixture_setup(noisy):
            pass

        import pytest
        @pytest.fixture
        def noisy(canary):
            logging.getLogger("setup").warning("x", extra={"token": canary.new("leakprobe")})

        def test_clean_extra(canary):
            canary.new("leakprobe")
            logging.getLogger("app").warning("login ok", extra={"user": "alice", "n": 3})
        """,
    )
    result.assert_outcomes(failed=2, passed=1, errors=1)
    for line in (
        "*found verbatim in log record extra field 'password' (logger 'app', call)*",
        "*found verbatim in log record extra field 'ctx' (logger 'app.db', call)*",
        "*found verbatim in log record extra field 'token' (logger 'setup', setup)*",
    ):
        result.stdout.fnmatch_lines([line])


def test_leak_in_a_child_environment_fails(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import os, subprocess, sys
        def child(env):
            return subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.stdin.read()"],
                env={**os.environ, **env}, stdin=subprocess.PIPE,
            )

        def test_leaky_child(canary):
            proc = child({"API_KEY": canary.new("leakprobe")})
            try:
                names = canary.search_environ(proc.pid)
            finally:
                proc.communicate(b"")
            assert "API_KEY" in names

        def test_clean_child(canary):
            proc = child({"API_KEY_FILE": "/run/secrets/key", "HANDED_ON": canary.new("leakprobe")})
            try:
                names = canary.search_environ(proc.pid, expected={"HANDED_ON"})
            finally:
                proc.communicate(b"")
            assert "API_KEY_FILE" in names and "API_KEY" not in names
        """,
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["*found verbatim in the environment of process * (python*), variable API_KEY*"]
    )
