"""leaseline's Prefect blocks saved in a Prefect API, as a plan source.

Only block documents are read (``POST /api/block_documents/filter``, ``include_secrets: false``):
leaseline's blocks hold references, never values. A ``LeaselineStore``'s ``secret_options`` (the
literal credentials a user chose to keep in Prefect) are dropped from the answer as it arrives:
never planned, never printed. A flow's code names the blocks it loads
(``SecretReference.load("openai")``, :mod:`._python`); :func:`documents` says what each one
references.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._detectors import looks_like_credential
from .._exceptions import AccessDenied, BackendUnavailable, ConfigError, InvalidReference
from .._refs import parse
from ._sources import reference

__all__ = ["BLOCK_TYPES", "BlockDocument", "PrefectApi", "documents"]

#: leaseline.prefect's block classes and their block type slugs (tests pin them to the blocks)
BLOCK_TYPES: Mapping[str, str] = {
    "SecretReference": "leaseline-secret-reference",
    "DatabaseCredentials": "leaseline-database-credentials",
    "AwsRoleCredentials": "leaseline-aws-role-credentials",
    "LeaselineStore": "leaseline-store",
}
_STORE_SLUG = BLOCK_TYPES["LeaselineStore"]
_AWS_ROLE_SLUG = BLOCK_TYPES["AwsRoleCredentials"]
_PAGE = 200
_STORE_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")


@dataclass
class BlockDocument:
    """One saved block: the references it holds and the store it names."""

    slug: str
    name: str
    references: set[str] = field(default_factory=set)
    #: the block's ``LeaselineStore``: store name -> its table (``type``, options; no secret)
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the saved store documents it nests: ``(slug, name)``
    nested: set[tuple[str, str]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.slug}/{self.name}"


class PrefectApi:
    """A Prefect API (``http(s)://HOST:PORT/api``); ``PREFECT_API_KEY`` (Prefect Cloud) or
    ``PREFECT_API_AUTH_STRING`` (a self-hosted server's basic auth) when set."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "plan: --prefect-api (or PREFECT_API_URL) must be http(s)://HOST:PORT/api"
            )
        #: the URL as printed: without any user:password@
        self.shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        cafile = os.environ.get("PREFECT_API_SSL_CERT_FILE") or None
        self._tls = ssl.create_default_context(cafile=cafile) if cafile else None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get("PREFECT_API_KEY")
        auth = os.environ.get("PREFECT_API_AUTH_STRING")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif auth:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        return headers

    def block_documents(self) -> list[dict[str, Any]]:
        """Every saved document of leaseline's block types, without secret fields."""
        found: list[dict[str, Any]] = []
        while True:
            body = {
                "block_types": {"slug": {"any_": sorted(BLOCK_TYPES.values())}},
                "include_secrets": False,
                "limit": _PAGE,
                "offset": len(found),
            }
            page = self._post("block_documents/filter", body)
            if not isinstance(page, list):
                raise BackendUnavailable(
                    f"plan: {self.shown}: block_documents/filter did not answer a list: is this "
                    "a Prefect API URL (ending in /api)?"
                )
            found += [_without_secrets(doc) for doc in page if isinstance(doc, dict)]
            if len(page) < _PAGE:
                return found

    def _post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"{self.url}/{path}", data=json.dumps(body).encode(), method="POST"
        )
        for name, value in self._headers().items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self._tls) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise AccessDenied(
                    f"plan: the Prefect API at {self.shown} refused to list block documents "
                    f"(HTTP {exc.code}): set PREFECT_API_KEY (Prefect Cloud) or "
                    "PREFECT_API_AUTH_STRING (a server with basic auth)"
                ) from None
            raise BackendUnavailable(
                f"plan: the Prefect API at {self.shown}: POST {path}: HTTP {exc.code} (is the URL "
                "the API's, ending in /api?)"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(
                f"plan: the Prefect API at {self.shown} is unreachable ({reason})"
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise BackendUnavailable(
                f"plan: {self.shown}: not a Prefect API answer (not JSON)"
            ) from None


def _without_secrets(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without any ``secret_options`` (Prefect 3 serves a dict of ``SecretStr`` as it
    is, ``include_secrets: false`` or not) and without the parts a plan does not use."""

    def clean(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: clean(v) for k, v in data.items() if k != "secret_options"}
        return data

    block_type = doc.get("block_type") or {}
    nested = {}
    for key, item in (doc.get("block_document_references") or {}).items():
        inner = (item or {}).get("block_document") or {}
        nested[key] = {
            "name": inner.get("name"),
            "slug": (inner.get("block_type") or {}).get("slug"),
        }
    return {
        "name": doc.get("name"),
        "slug": block_type.get("slug") or doc.get("block_type_slug"),
        "data": clean(doc.get("data") or {}),
        "nested": nested,
    }


def documents(
    raw: list[dict[str, Any]],
    *,
    stores: Mapping[str, Mapping[str, Any]],
    aliases: Mapping[str, str],
) -> dict[tuple[str, str], BlockDocument]:
    """``(slug, name)`` -> what the document references, from :meth:`PrefectApi.block_documents`.

    ``stores`` and ``aliases`` are the config's: a block's reference may be an alias, and its
    store is known by name only inside the block.
    """
    found: dict[tuple[str, str], BlockDocument] = {}
    for item in raw:
        slug, name, data = str(item.get("slug")), str(item.get("name")), item.get("data") or {}
        doc = BlockDocument(slug, name)
        found[(slug, name)] = doc
        store = data if slug == _STORE_SLUG else data.get("store")
        known = set(stores)
        if isinstance(store, dict):
            store_name = str(store.get("store_name") or "vault")
            table = {k: v for k, v in (store.get("options") or {}).items()}
            table["type"] = str(store.get("store_type") or store_name)
            if _STORE_NAME.match(store_name):
                doc.stores[store_name] = table
                known.add(store_name)
                configured = stores.get(store_name)
                if configured is not None and configured.get("type", store_name) != table["type"]:
                    doc.notes.append(
                        f"Prefect block {doc.label}: its store '{store_name}' is of type "
                        f"{table['type']}, leaseline.toml's of type "
                        f"{configured.get('type', store_name)}: planned as leaseline.toml's"
                    )
            for text in _strings(store.get("options")):
                ref = reference(text, known | {"env", "file"})
                if ref:
                    doc.references.add(ref)  # the store's own login: env://VAULT_TOKEN...
        for inner in (item.get("nested") or {}).values():
            if inner.get("slug") and inner.get("name"):
                doc.nested.add((str(inner["slug"]), str(inner["name"])))
        if slug == _STORE_SLUG:
            continue
        ref = data.get("ref")
        if slug == _AWS_ROLE_SLUG and isinstance(ref, str) and ref.startswith("arn:"):
            ref = f"aws-sts://{ref}"  # as the block reads a bare role ARN
        planned, why = _block_reference(ref, known, aliases)
        if planned:
            doc.references.add(planned)
        else:
            doc.notes.append(
                f"Prefect block {doc.label}: its ref {why}; no policy is planned for it "
                "(fix the block: save it again with a valid reference)"
            )
    return found


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _block_reference(
    ref: Any, known: set[str], aliases: Mapping[str, str]
) -> tuple[str | None, str]:
    """The reference a block's ``ref`` stands for, or why there is none (never quoting it:
    a value saved where a reference belongs must not be printed)."""
    if not isinstance(ref, str) or not ref:
        return None, "is missing or not a string"
    kind = looks_like_credential(ref)
    if kind:
        return None, f"looks like a credential ({kind}), not a reference: move the value to a store"
    if "://" not in ref:
        if ref.partition("#")[0] not in aliases:
            return None, "is neither STORE://LOCATOR nor an alias in leaseline.toml's [aliases]"
        try:
            ref = str(parse(ref, aliases=aliases))
        except InvalidReference:
            return None, "is an alias whose target is not a valid reference"
    planned = reference(ref, known)
    if planned:
        return planned, ""
    store = ref.split("://", 1)[0]
    try:
        parse(ref)
    except InvalidReference:
        return None, "is malformed (expected STORE://LOCATOR[?OPTIONS][#FIELD])"
    if _STORE_NAME.match(store) and store not in known:
        return None, (
            f"names store '{store}', which is neither configured (leaseline.toml [stores], the "
            "block's store) nor a store type"
        )
    return None, "is a URL, not a reference to a store"
