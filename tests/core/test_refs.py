"""Reference parsing: pure, total, and never echoing a value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from leaseline import InvalidReference, SecretRef, parse


@pytest.mark.parametrize(
    ("ref", "store", "locator", "options", "field"),
    [
        ("vault://secret/llm/openai#api_key", "vault", "secret/llm/openai", (), "api_key"),
        ("vault://database/creds/reader", "vault", "database/creds/reader", (), None),
        ("vault://secret/x?version=3#k", "vault", "secret/x", (("version", "3"),), "k"),
        ("aws-sm://prod/openai#api_key", "aws-sm", "prod/openai", (), "api_key"),
        (
            "aws-sm://prod/openai?version-stage=AWSPREVIOUS",
            "aws-sm",
            "prod/openai",
            (("version-stage", "AWSPREVIOUS"),),
            None,
        ),
        ("aws-ssm:///ml/openai/key", "aws-ssm", "/ml/openai/key", (), None),
        (
            "aws-sts://arn:aws:iam::123456789012:role/train?duration=900",
            "aws-sts",
            "arn:aws:iam::123456789012:role/train",
            (("duration", "900"),),
            None,
        ),
        (
            "azure-kv://my-vault/openai-key?version=abc",
            "azure-kv",
            "my-vault/openai-key",
            (("version", "abc"),),
            None,
        ),
        ("env://OPENAI_API_KEY", "env", "OPENAI_API_KEY", (), None),
        ("file:///run/secrets/openai#api_key", "file", "/run/secrets/openai", (), "api_key"),
        ("prod-aws://prod/openai#api_key", "prod-aws", "prod/openai", (), "api_key"),
    ],
)
def test_grammar(
    ref: str, store: str, locator: str, options: tuple[tuple[str, str], ...], field: str | None
) -> None:
    parsed = parse(ref)
    assert (parsed.store, parsed.locator, parsed.options, parsed.field) == (
        store,
        locator,
        options,
        field,
    )
    assert parse(str(parsed)) == parsed


def test_key_drops_field_and_orders_options() -> None:
    a = parse("vault://database/creds/reader#username")
    b = parse("vault://database/creds/reader#password")
    assert a.key == b.key == "vault://database/creds/reader"
    assert parse("x://p?b=1&a=2").key == parse("x://p?a=2&b=1").key == "x://p?a=2&b=1"


def test_aliases() -> None:
    aliases = {"openai": "vault://secret/llm/openai#api_key", "db": "vault://database/creds/r"}
    assert parse("openai", aliases=aliases) == parse("vault://secret/llm/openai#api_key")
    assert parse("db#password", aliases=aliases).field == "password"
    with pytest.raises(InvalidReference, match="known aliases: db, openai"):
        parse("opena1", aliases=aliases)


@pytest.mark.parametrize(
    ("ref", "points_at"),
    [
        ("Vault://x", "did you mean 'vault'"),
        ("vault://", "missing locator"),
        ("vault://a#", "empty field"),
        ("vault://a?x", "needs a value"),
        ("vault://a?x=1&x=2", "given twice"),
        ("vault://a#b#c", "only one '#FIELD'"),
        ("vault://a#f?x=1", "go before '#FIELD'"),
        ("vault://a b", "whitespace"),
        ("://a", "missing store name"),
    ],
)
def test_errors_point_at_the_bad_part(ref: str, points_at: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(ref)
    message = str(info.value)
    assert points_at in message
    assert "expected STORE://LOCATOR" in message
    assert "^" in message or "missing store" in message or "Vault" in message


def test_values_are_refused_without_being_echoed() -> None:
    import secrets

    for value in (
        "sk-proj-" + secrets.token_urlsafe(32),
        "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
        "hf_" + secrets.token_hex(20),
        # letters only (1 in ~30 random ids): the table once wanted a digit too, and echoed it
        "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(16)),
        secrets.token_urlsafe(32),
        # word-like and of low entropy, yet a value (1 in ~120 of the test canaries was quoted)
        "canary-" + "".join(secrets.choice("abcdef0123") for _ in range(24)),
        "correcthorsebatterystaple",
        "postgresql://user:" + secrets.token_hex(8) + "@db.internal/train",
    ):
        with pytest.raises(InvalidReference) as info:
            parse(value)
        assert value not in str(info.value)
        assert value[6:20] not in str(info.value)


def test_invalid_reference_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse("nope")


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=200))
def test_parse_is_total(text: str) -> None:
    try:
        parsed = parse(text)
    except InvalidReference:
        return
    assert isinstance(parsed, SecretRef)
    assert parse(str(parsed)) == parsed


def _names_one_path(locator: str) -> bool:
    body = locator[1:] if locator.startswith("/") else locator
    return all(seg not in {"", ".", ".."} for seg in body.split("/"))


@settings(max_examples=500, deadline=None)
@given(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True).filter(lambda s: s != "aws-sts"),
    st.from_regex(r"[A-Za-z0-9_./:-]{1,40}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)),
)
def test_well_formed_references_round_trip(store: str, locator: str, field: str | None) -> None:
    ref = f"{store}://{locator}" + (f"#{field}" if field else "")
    try:
        parsed = parse(ref)
    except InvalidReference as exc:
        # refused: a credential-looking locator, or one that does not name one path
        assert "looks like a credential" in str(exc) or (
            not _names_one_path(locator) and "path segment" in str(exc)
        )
        return
    assert _names_one_path(locator)
    assert (parsed.store, parsed.locator, parsed.field) == (store, locator, field)


# -- 19.8: a reference names one path, and its options are checked before any request ----------


@pytest.mark.parametrize(
    ("ref", "bad_part", "why"),
    [
        ("vault://secret/a/../b", "../b", "'..' path segment"),
        ("vault://secret/./b", "./b", "'.' path segment"),
        ("vault://secret//b", "/b", "empty path segment"),
        ("vault://secret/b/", "", "empty path segment"),
        ("vault://secret/a%2F..%2Fb", "%2F..%2Fb", "percent-encoded '/' (%2F)"),
        ("vault://secret/a%2f..%2fb", "%2f..%2fb", "percent-encoded '/' (%2f)"),
        ("vault://secret/a%2E%2E/b", "%2E%2E/b", "percent-encoded '.'"),
        ("vault://secret/a%252Fb", "%252Fb", "percent-encoded '%'"),
        ("file:///run/secrets/../../etc/passwd", "../../etc/passwd", "'..' path segment"),
        ("vault://a?version=x", "x", "option 'version' must be a positive integer"),
        ("vault://a?version=0", "0", "option 'version' must be a positive integer"),
        ("vault://a?version=-3", "-3", "option 'version' must be a positive integer"),
        ("vault://a?verison=3", "verison=3", "unknown option 'verison' for store type 'vault'"),
        ("aws-ssm:///ml/key?version=two", "two", "option 'version' must be a positive integer"),
        (
            "aws-sts://arn:aws:iam::123456789012:role/train?duration=soon",
            "soon",
            "option 'duration' must be a duration from 15m to 12h",
        ),
        (
            "aws-sts://arn:aws:iam::123456789012:role/train?duration=30d",
            "30d",
            "option 'duration' must be a duration from 15m to 12h",
        ),
        ("aws-sts://train?duration=900", "train", "aws-sts takes a role ARN"),
        ("aws-sts://arn:aws:iam::1234:role/x", "arn:", "aws-sts takes a role ARN"),
        ("azure-kv://v/name?version=a.b", "a.b", "option 'version' must be a Key Vault version"),
        ("prod-aws://role?duration=forever", "forever", "option 'duration' must be a duration"),
    ],
)
def test_paths_and_option_values_are_checked_and_pointed_at(
    ref: str, bad_part: str, why: str
) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(ref)
    quoted, pointer, *_ = str(info.value).splitlines()
    assert quoted == f"invalid reference '{ref}'"
    column = pointer.index("^")
    assert quoted[column:].startswith(bad_part), (quoted[column:], bad_part)
    assert why in pointer


@pytest.mark.parametrize(
    "ref",
    [
        "vault://secret/a.b/c..d/.e?version=12",
        "aws-ssm:///ml/openai/key?version=3",
        "aws-sts://arn:aws-cn:iam::123456789012:role/path/train?duration=1h&session-name=t-1",
        "aws-sm://prod/openai?version-id=0123456789abcdef0123456789abcdef",
        "azure-kv://ml-keys/openai-key?version=3d31e6c4b0f24f5e9a4c0c2f0d1a2b3c",
        "file:///run/secrets/openai%20key",
        "prod-aws://prod/openai?version=any-label",
    ],
)
def test_valid_paths_and_options_still_parse(ref: str) -> None:
    assert str(parse(ref)) == ref


# -- issue 21: one rule for "this environment variable's value is a reference" ----------------


def test_environment_references_is_the_one_rule() -> None:
    from leaseline._refs import environment_references

    environ = {
        "A": "vault://secret/a#k",  # a built-in store type
        "B": "prod-aws://ml/key",  # a configured store
        "C": "https://example.invalid/x",  # a URL
        "D": "s3://bucket/key",  # a URL scheme that is never a store
        "E": "file:///etc/hosts",  # file:// and env:// are ordinary URLs unless configured
        "F": "env://HOME",
        "G": "plugin://x/y",  # an entry-point store type: looked up only when needed
        "H": "nothing://x",
        "LEASELINE_AUDIT__HMAC_KEY": "vault://secret/audit#key",  # leaseline's own config
        "I": "not a reference",
    }
    asked: list[int] = []

    def store_names() -> list[str]:
        asked.append(1)
        return ["plugin", "vault", "file", "env"]

    found = environment_references(environ, configured=["prod-aws"], store_names=store_names)
    assert found == {"A": environ["A"], "B": environ["B"], "G": environ["G"]}
    assert asked == [1]  # once, not per variable
    configured = environment_references(
        {"E": environ["E"], "F": environ["F"], "A": environ["A"]},
        configured=["file"],
        store_names=store_names,
    )
    assert configured == {"E": environ["E"], "A": environ["A"]} and asked == [1]
