"""``aws-sm://``, ``aws-ssm://``, ``aws-sts://``: Secrets Manager, Parameter Store, STS AssumeRole.

Credentials come from boto3's standard chain (environment, ``profile``, SSO, web identity,
container/instance roles); ``AWS_ENDPOINT_URL`` and the per-service ``AWS_ENDPOINT_URL_<SERVICE>``
are honoured by botocore itself unless a store sets ``endpoint_url``. Store options::

    [stores.prod-aws]
    type = "aws-sm"               # or aws-ssm, aws-sts
    region = "eu-west-1"          # else AWS_DEFAULT_REGION / the profile's region / AWS_REGION
    endpoint_url = "https://..."  # else botocore's own endpoint resolution
    profile = "ml-prod"           # else AWS_PROFILE / the default chain
    connect_timeout = "5s"
    read_timeout = "5s"
    max_attempts = 1              # botocore's own tries per call; the resolver retries
    # aws-sts only:
    role_session_name = "training"
    duration = "1h"
    external_id = "env://ROLE_EXTERNAL_ID"

References: ``aws-sm://prod/openai#api_key`` (``?version-stage=``, ``?version-id=``),
``aws-ssm:///ml/openai/key`` (``?version=`` or ``?label=``),
``aws-sts://arn:aws:iam::123456789012:role/train?duration=900`` (``?session-name=``,
``?external-id=``).
"""

from __future__ import annotations

import base64
import builtins
import functools
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .._config import parse_duration
from .._exceptions import AccessDenied, ConfigError, InvalidReference, SecretNotFound
from .._refs import SecretRef
from .._secret import Lease
from . import BackendContext, ReadResult, SecretMetadata, Version
from ._aws import AwsBackendBase, AwsConfig, ref_options, timestamp

__all__ = [
    "AssumeRoleBackend",
    "AssumeRoleConfig",
    "AwsConfig",
    "ParameterStoreBackend",
    "SecretsManagerBackend",
]


@dataclass(frozen=True, slots=True)
class AssumeRoleConfig(AwsConfig):
    """``[stores.NAME]`` of type ``aws-sts``: the caller's store options plus AssumeRole defaults."""

    role_session_name: str | None = None
    duration: float = 3600.0
    external_id: str | None = None


# -- Secrets Manager -----------------------------------------------------------------------------


def _secret_fields(response: Mapping[str, Any]) -> dict[str, str]:
    """JSON objects expose their keys as fields; anything else is one field, ``value``."""
    if "SecretString" in response:
        text = str(response["SecretString"])
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict):
                return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
        return {"value": text}
    binary = response.get("SecretBinary", b"")
    return {"value": base64.b64encode(bytes(binary)).decode("ascii")}


def _list_secrets(kwargs: dict[str, Any], client: Any) -> Any:
    return client.list_secrets(**kwargs)


class SecretsManagerBackend(AwsBackendBase):
    """``aws-sm://NAME[?version-stage=AWSPREVIOUS|?version-id=ID][#field]``: GetSecretValue.

    >>> Resolver().resolve("aws-sm://prod/openai#api_key")  # doctest: +SKIP
    """

    type: ClassVar[str] = "aws-sm"
    service: ClassVar[str] = "secretsmanager"
    _OPTIONS: ClassVar[Mapping[str, str]] = {
        "version-stage": "VersionStage",
        "version-id": "VersionId",
    }

    def read(self, ref: SecretRef) -> ReadResult:
        params = ref_options(ref, self._OPTIONS)
        if not params:
            # AWS's own default, said explicitly: moto's default version does not follow
            # UpdateSecretVersionStage, so after a staged rotation it would serve the old one
            params = {"VersionStage": "AWSCURRENT"}
        response = self._call(
            "secretsmanager:GetSecretValue",
            ref.locator,
            ref.key,
            lambda c: c.get_secret_value(SecretId=ref.locator, **params),
        )
        return ReadResult(_secret_fields(response), None, version=response.get("VersionId"))

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        """Age of the version the reference points at (its ``CreatedDate``), else
        ``LastRotatedDate``/``LastChangedDate``."""
        params = ref_options(ref, self._OPTIONS)
        desc = self._call(
            "secretsmanager:DescribeSecret",
            ref.locator,
            ref.key,
            lambda c: c.describe_secret(SecretId=ref.locator),
        )
        stage = params.get("VersionStage", "AWSCURRENT")
        version = params.get("VersionId") or next(
            (v for v, stages in desc.get("VersionIdsToStages", {}).items() if stage in stages), None
        )
        updated = timestamp(desc.get("LastRotatedDate")) or timestamp(desc.get("LastChangedDate"))
        if version is not None:
            try:
                listing = self._call(
                    "secretsmanager:ListSecretVersionIds",
                    ref.locator,
                    ref.key,
                    lambda c: c.list_secret_version_ids(
                        SecretId=ref.locator, IncludeDeprecated=True
                    ),
                )
            except AccessDenied:
                listing = {}
            for item in listing.get("Versions", []):
                if item.get("VersionId") == version and timestamp(item.get("CreatedDate")):
                    updated = timestamp(item.get("CreatedDate"))
        return SecretMetadata(
            ref.key,
            updated_at=updated,
            created_at=timestamp(desc.get("CreatedDate")),
            version=version,
            extra={
                "last_changed": timestamp(desc.get("LastChangedDate")),
                "last_rotated": timestamp(desc.get("LastRotatedDate")),
                "rotation_enabled": bool(desc.get("RotationEnabled", False)),
                "next_rotation": timestamp(desc.get("NextRotationDate")),
                "arn": desc.get("ARN"),
            },
        )

    def list(self, prefix: str) -> builtins.list[str]:
        """Names of the secrets starting with ``prefix`` (ListSecrets, name filter), excluding
        secrets scheduled for deletion. Used by rotation checks."""
        names: builtins.list[str] = []
        kwargs: dict[str, Any] = {"IncludePlannedDeletion": False}
        if prefix:
            kwargs["Filters"] = [{"Key": "name", "Values": [prefix]}]
        while True:
            page = self._call(
                "secretsmanager:ListSecrets",
                prefix or "*",
                f"aws-sm://{prefix}",
                functools.partial(_list_secrets, dict(kwargs)),
            )
            for item in page.get("SecretList", []):
                name = str(item.get("Name", ""))
                if name.startswith(prefix) and not item.get("DeletedDate"):
                    names.append(name)
            token = page.get("NextToken")
            if not token:
                return sorted(names)
            kwargs["NextToken"] = token

    # -- rotation (capability StagingLabels) ------------------------------------------------------

    def read_version(self, ref: SecretRef, stage: str = "AWSCURRENT") -> Version:
        """The version labelled ``stage``; a binary secret is refused (rotation writes text)."""
        response = self._call(
            "secretsmanager:GetSecretValue",
            ref.locator,
            ref.key,
            lambda c: c.get_secret_value(SecretId=ref.locator, VersionStage=stage),
        )
        if "SecretString" not in response:
            raise ConfigError(f"{ref.key} is a binary secret; random rotators write strings")
        fields = _secret_fields(response)
        is_json = str(response["SecretString"]).lstrip().startswith("{") and "value" not in fields
        return Version(fields, str(response["VersionId"]), json=is_json)

    def stage_version(self, ref: SecretRef, text: str) -> str:
        """PutSecretValue labelled AWSPENDING; returns the new version id."""
        token = str(uuid.uuid4())
        self._call(
            "secretsmanager:PutSecretValue",
            ref.locator,
            ref.key,
            lambda c: c.put_secret_value(
                SecretId=ref.locator,
                ClientRequestToken=token,
                SecretString=text,
                VersionStages=["AWSPENDING"],
            ),
        )
        return token

    def promote_version(self, ref: SecretRef, version: str, previous: str | None) -> None:
        """Move AWSCURRENT to ``version`` (``previous`` becomes AWSPREVIOUS), drop AWSPENDING."""
        self._call(
            "secretsmanager:UpdateSecretVersionStage",
            ref.locator,
            ref.key,
            lambda c: c.update_secret_version_stage(
                SecretId=ref.locator,
                VersionStage="AWSCURRENT",
                MoveToVersionId=version,
                RemoveFromVersionId=previous,
            ),
        )
        self.unlabel_version(ref, "AWSPENDING", version)

    def unlabel_version(self, ref: SecretRef, stage: str, version: str) -> None:
        self._call(
            "secretsmanager:UpdateSecretVersionStage",
            ref.locator,
            ref.key,
            lambda c: c.update_secret_version_stage(
                SecretId=ref.locator, VersionStage=stage, RemoveFromVersionId=version
            ),
        )


# -- Parameter Store -----------------------------------------------------------------------------


class ParameterStoreBackend(AwsBackendBase):
    """``aws-ssm:///path/to/param[?version=N|?label=L]``: GetParameter, decrypted; field ``value``.

    The locator keeps its leading slash: ``aws-ssm:///ml/openai/key`` reads ``/ml/openai/key``.
    """

    type: ClassVar[str] = "aws-ssm"
    service: ClassVar[str] = "ssm"
    noun: ClassVar[str] = "parameter"
    _OPTIONS: ClassVar[Mapping[str, str]] = {"version": "version", "label": "label"}

    def _name(self, ref: SecretRef) -> str:
        params = ref_options(ref, self._OPTIONS)
        if len(params) > 1:
            raise InvalidReference(
                f"invalid reference '{ref}': give ?version= or ?label=, not both", ref=str(ref)
            )
        selector = next(iter(params.values()), None)
        return f"{ref.locator}:{selector}" if selector else ref.locator

    def read(self, ref: SecretRef) -> ReadResult:
        name = self._name(ref)
        response = self._call(
            "ssm:GetParameter",
            name,
            ref.key,
            lambda c: c.get_parameter(Name=name, WithDecryption=True),
        )
        parameter = response["Parameter"]
        version = parameter.get("Version")
        return ReadResult(
            {"value": str(parameter.get("Value", ""))},
            None,
            version=None if version is None else str(version),
        )

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        """``LastModifiedDate`` and ``Version`` from DescribeParameters (no value is fetched)."""
        self._name(ref)  # validates the options
        response = self._call(
            "ssm:DescribeParameters",
            ref.locator,
            ref.key,
            lambda c: c.describe_parameters(
                ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [ref.locator]}]
            ),
        )
        found = response.get("Parameters", [])
        if not found:
            region = self.client().meta.region_name
            raise SecretNotFound(
                f"{ref.key} not found: no parameter '{ref.locator}' in AWS region {region} "
                f"(store '{self.name}')",
                ref=ref.key,
                store=self.name,
            )
        item = found[0]
        version = item.get("Version")
        return SecretMetadata(
            ref.key,
            updated_at=timestamp(item.get("LastModifiedDate")),
            version=None if version is None else str(version),
            extra={"type": item.get("Type"), "tier": item.get("Tier")},
        )


# -- STS AssumeRole ------------------------------------------------------------------------------


class AssumeRoleBackend(AwsBackendBase):
    """``aws-sts://ROLE_ARN[?duration=900][&session-name=..][&external-id=..]``: AssumeRole.

    Fields ``access_key_id``, ``secret_access_key``, ``session_token``; the lease ends at the
    credentials' ``Expiration`` and is not renewable, so the resolver issues fresh credentials
    ahead of it. STS credentials cannot be revoked: they end on their own.
    """

    type: ClassVar[str] = "aws-sts"
    service: ClassVar[str] = "sts"
    noun: ClassVar[str] = "role"
    config_class: ClassVar[builtins.type[AwsConfig]] = AssumeRoleConfig
    _OPTIONS: ClassVar[Mapping[str, str]] = {
        "duration": "duration",
        "session-name": "session-name",
        "external-id": "external-id",
    }

    def __init__(self, name: str, options: Mapping[str, Any], context: BackendContext) -> None:
        super().__init__(name, options, context)
        self._issued: dict[str, tuple[float, float, str | None]] = {}

    def _params(self, ref: SecretRef) -> dict[str, Any]:
        cfg = self.config
        assert isinstance(cfg, AssumeRoleConfig)
        opts = ref_options(ref, self._OPTIONS)
        try:
            duration = parse_duration(opts.get("duration", cfg.duration), "duration")
        except ConfigError:
            raise InvalidReference(
                f"invalid reference '{ref}': ?duration= must be seconds or a duration "
                "such as 900 or 15m",
                ref=str(ref),
            ) from None
        params: dict[str, Any] = {
            "RoleArn": ref.locator,
            "RoleSessionName": opts.get("session-name")
            or cfg.role_session_name
            or f"leaseline-{os.getpid()}",
            "DurationSeconds": int(duration),
        }
        external_id = opts.get("external-id") or cfg.external_id
        if external_id:
            params["ExternalId"] = external_id
        return params

    def read(self, ref: SecretRef) -> ReadResult:
        params = self._params(ref)
        response = self._call(
            "sts:AssumeRole", ref.locator, ref.key, lambda c: c.assume_role(**params)
        )
        creds = response["Credentials"]
        now = self._clock()
        expires = creds["Expiration"].timestamp()
        identity = response.get("AssumedRoleUser", {}).get("Arn")
        self._issued[ref.key] = (now, expires, identity)
        lease = Lease(
            id=None, renewable=False, ttl=max(0.0, expires - now), issued_at=now, expires_at=expires
        )
        return ReadResult(
            {
                "access_key_id": creds["AccessKeyId"],
                "secret_access_key": creds["SecretAccessKey"],
                "session_token": creds["SessionToken"],
            },
            lease,
            identity=identity,
        )

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        """When this store last issued credentials for ``ref`` and when they expire."""
        self._params(ref)  # validates the reference
        issued, expires, identity = self._issued.get(ref.key, (None, None, None))
        return SecretMetadata(
            ref.key,
            updated_at=issued,
            expires_at=expires,
            extra={"role_arn": ref.locator, "assumed_role": identity},
        )
