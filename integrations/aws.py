"""boto3 sessions whose credentials come from a leaseline reference and never go stale.

>>> import leaseline.aws
>>> s3 = leaseline.aws.session("aws-sts://arn:aws:iam::123456789012:role/train").client("s3")
... # doctest: +SKIP

The session holds botocore ``RefreshableCredentials`` fed by the resolver: botocore asks for
fresh credentials once a third of their life is left (the resolver has usually issued them in
the background by then) and blocks for them before the resolver's safety margin, so a request
is never signed with an expired key. Any reference with AWS key fields works: ``aws-sts://``
(``access_key_id``, ``secret_access_key``, ``session_token``), or a Vault AWS secrets engine
(``access_key``, ``secret_key``, ``security_token``). boto3 is imported on first call:
``import leaseline`` stays free of it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._exceptions import BackendNotInstalled, SecretNotFound
from ._refs import SecretRef
from ._secret import Secret

if TYPE_CHECKING:
    import boto3
    from botocore.credentials import RefreshableCredentials

    from ._resolver import Resolver

__all__ = ["credentials", "session"]

#: leaseline field names, then the Vault AWS engine's
_NAMES = {
    "access_key": ("access_key_id", "access_key"),
    "secret_key": ("secret_access_key", "secret_key"),
    "token": ("session_token", "security_token"),
}


def _field(secret: Secret, key: str, *, required: bool) -> str | None:
    for name in _NAMES[key]:
        if name in secret:
            return secret.reveal(name)
    if required:
        raise SecretNotFound(
            f"{secret.ref} has no AWS {key.replace('_', ' ')} field (one of "
            f"{', '.join(_NAMES[key])}); its fields are: {', '.join(secret.fields)}",
            ref=secret.ref,
        )
    return None


def credentials(
    ref: str | SecretRef,
    resolver: Resolver | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> RefreshableCredentials:
    """botocore credentials that re-resolve ``ref`` ahead of its lease's end.

    Raises what the resolver raises for the first read (:class:`SecretNotFound`,
    :class:`AccessDenied`, :class:`BackendUnavailable`...) and :class:`BackendNotInstalled`
    without boto3.
    """
    try:
        from botocore.credentials import RefreshableCredentials
    except ImportError as exc:
        raise BackendNotInstalled(
            "leaseline.aws needs boto3: pip install 'leaseline[aws]'", store="aws-sts"
        ) from exc
    if resolver is None:
        from ._api import default_resolver

        resolver = default_resolver()
    res = resolver
    parsed = res.parse(ref).without_field()
    settings = res.config.resolver
    first = res.get(parsed)
    ttl = first.lease.ttl if first.lease is not None else settings.refresh_after
    # Refresh when a third is left (the resolver's refresh-ahead point); block for fresh
    # credentials before the margin inside which the resolver itself stops serving them.
    margin = math.ceil(min(settings.safety_margin, ttl / 10))  # botocore takes whole seconds
    advisory = max(int(ttl / 3), margin)

    def metadata(secret: Secret) -> Mapping[str, Any]:
        lease = secret.lease
        expires = lease.expires_at if lease is not None else clock() + settings.refresh_after
        return {
            "access_key": _field(secret, "access_key", required=True),
            "secret_key": _field(secret, "secret_key", required=True),
            "token": _field(secret, "token", required=False),
            "expiry_time": datetime.fromtimestamp(expires, timezone.utc).isoformat(),
        }

    def refresh() -> Mapping[str, Any]:
        secret = res.get(parsed)
        lease = secret.lease
        # Past 2/3 of its own life (or inside the margin) the cached credential is replaced now
        # rather than in the background: a session must not sign with it much longer. A fresh
        # but short one is kept, so a short lease cannot turn every request into a re-issue.
        if lease is not None and lease.expires_at - clock() <= max(margin, lease.ttl / 3):
            res.invalidate(parsed)
            secret = res.get(parsed)
        return metadata(secret)

    initial = metadata(first)
    return RefreshableCredentials(
        access_key=initial["access_key"],
        secret_key=initial["secret_key"],
        token=initial["token"],
        expiry_time=datetime.fromisoformat(initial["expiry_time"]),
        refresh_using=refresh,
        method="leaseline",
        time_fetcher=lambda: datetime.fromtimestamp(clock(), timezone.utc),
        advisory_timeout=advisory,
        mandatory_timeout=margin,
    )


def session(
    ref: str | SecretRef,
    resolver: Resolver | None = None,
    *,
    region_name: str | None = None,
    clock: Callable[[], float] = time.time,
) -> boto3.Session:
    """A ``boto3.Session`` signed with the credentials behind ``ref``, refreshed ahead of expiry.

    The region is ``region_name``, else the ``region`` of ``ref``'s store, else boto3's own
    (``AWS_DEFAULT_REGION``, the profile). Raises like :func:`credentials`.

    >>> s = session("aws-sts://arn:aws:iam::123456789012:role/train?duration=900")  # doctest: +SKIP
    >>> s.client("sts").get_caller_identity()["Arn"]  # doctest: +SKIP
    'arn:aws:sts::123456789012:assumed-role/train/leaseline-4242'
    """
    try:
        import boto3
        import botocore.session
        from botocore.credentials import CredentialProvider
    except ImportError as exc:
        raise BackendNotInstalled(
            "leaseline.aws needs boto3: pip install 'leaseline[aws]'", store="aws-sts"
        ) from exc
    if resolver is None:
        from ._api import default_resolver

        resolver = default_resolver()
    creds = credentials(ref, resolver, clock=clock)

    class LeaselineProvider(CredentialProvider):  # type: ignore[misc]  # botocore is untyped
        METHOD = CANONICAL_NAME = "leaseline"

        def load(self) -> RefreshableCredentials:
            return creds

    core = botocore.session.Session()
    core.get_component("credential_provider").insert_before("env", LeaselineProvider())
    if region_name is None:  # the region the reference's store talks to, when it is an AWS store
        from .backends._aws import AwsBackendBase  # boto3 is imported by now

        backend = resolver.backend(resolver.parse(ref).store)
        if isinstance(backend, AwsBackendBase):
            region_name = backend.client().meta.region_name
    return boto3.Session(botocore_session=core, region_name=region_name)
