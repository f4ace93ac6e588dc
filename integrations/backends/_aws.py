"""What the AWS stores share: config, one boto3 client per store, and error translation.

The stores themselves are in :mod:`leaseline.backends.aws`.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .._config import parse_duration
from .._exceptions import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    InvalidReference,
    LeaselineError,
    SecretNotFound,
)
from .._refs import SecretRef
from .._secret import Lease
from . import BackendContext, options_of

__all__ = ["AwsBackendBase", "AwsConfig", "ref_options", "timestamp"]

T = TypeVar("T")
_C = TypeVar("_C", bound="AwsConfig")

_NOT_FOUND = frozenset(
    {"ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound", "NoSuchEntity"}
)
_DENIED = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "DecryptionFailure",
    }
)
_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServiceError",
        "InternalServiceErrorException",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
    }
)
#: AWS messages for these codes describe the request (names, limits), never a secret value
_SAFE_MESSAGE = frozenset(
    {
        "ValidationException",
        "ValidationError",
        "InvalidParameterException",
        "InvalidRequestException",
    }
)
_CREDENTIALS_HELP = (
    "configure credentials through the standard AWS chain: AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE (or `profile` in the store's config), "
    "`aws sso login`, web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), "
    "or a container/instance role"
)


# botocore logs every response body at DEBUG on this logger; inside leaseline's own calls those
# bodies are secret values (GetSecretValue, GetParameter, AssumeRole), which the masker cannot
# know yet. The filter drops the logger's records only while this thread is inside such a call.
_BODY_LOGGER = "botocore.parsers"
_in_call = threading.local()


class _HideResponseBodies(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_in_call, "depth", 0)


_body_filter = _HideResponseBodies()


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwsConfig:
    """``[stores.NAME]`` of type ``aws-sm`` or ``aws-ssm``: where and how to call AWS."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 5.0
    #: botocore's own attempts per call (1 = no SDK retries: the resolver retries, in its deadline)
    max_attempts: int = 1

    @classmethod
    def from_options(
        cls: type[_C], name: str, options: Mapping[str, Any], context: BackendContext
    ) -> _C:
        """Validate ``options``; string values may be references (``env://AWS_PROFILE_ML``)."""
        where = f"[stores.{name}]"
        known = {f.name for f in fields(cls)}
        table = options_of(options, known, where)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in table:
                continue
            value = table[f.name]
            if isinstance(value, str) and "://" in value and f.name != "endpoint_url":
                value = context.resolve(value)
            kwargs[f.name] = cls._convert(f.name, value, where)
        return cls(**kwargs)

    @staticmethod
    def _convert(key: str, value: Any, where: str) -> Any:
        if key.endswith("timeout") or key == "duration":
            return parse_duration(value, f"{where} {key}")
        if key == "max_attempts":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ConfigError(
                    f"{where} max_attempts: expected a whole number >= 1, got {value!r}"
                )
            try:
                number = int(value)
            except ValueError:
                raise ConfigError(
                    f"{where} max_attempts: expected a whole number >= 1, got {value!r}"
                ) from None
            if number < 1:
                raise ConfigError(f"{where} max_attempts: expected a whole number >= 1")
            return number
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} {key}: expected a non-empty string")
        return value


def ref_options(ref: SecretRef, allowed: Mapping[str, str]) -> dict[str, str]:
    """The reference's ``?options`` mapped to API parameter names; unknown ones are refused."""
    out: dict[str, str] = {}
    for key, value in ref.options:
        if key not in allowed:
            known = ", ".join(f"?{k}=" for k in sorted(allowed)) or "none"
            raise InvalidReference(
                f"invalid reference '{ref}': unknown option '{key}' for store type "
                f"'{ref.store}'; known options: {known}",
                ref=str(ref),
            )
        out[allowed[key]] = value
    return out


def timestamp(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


# -- the shared client and error translation -----------------------------------------------------


class AwsBackendBase:
    """One boto3 client per store, created on first use; SDK errors become leaseline errors."""

    type: ClassVar[str]
    service: ClassVar[str]
    config_class: ClassVar[builtins.type[AwsConfig]] = AwsConfig
    #: what a locator names, for "not found" messages
    noun: ClassVar[str] = "secret"

    def __init__(self, name: str, options: Mapping[str, Any], context: BackendContext) -> None:
        self.name = name
        self.config: AwsConfig = self.config_class.from_options(name, options, context)
        self._clock = context.clock
        self._lock = threading.Lock()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} store={self.name!r} region={self.config.region!r}>"

    # -- client -----------------------------------------------------------------------------------

    def client(self) -> Any:
        """The boto3 client (thread-safe, shared), created on first use.

        Raises :class:`ConfigError` when no region is configured or the profile does not exist.
        """
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        body_logger = logging.getLogger(_BODY_LOGGER)
        if _body_filter not in body_logger.filters:
            body_logger.addFilter(_body_filter)
        cfg = self.config
        where = f"[stores.{self.name}]"
        try:
            session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
            if session.region_name is None and os.environ.get("AWS_REGION"):
                # botocore reads only AWS_DEFAULT_REGION; the other SDKs and most runtimes use this
                session = boto3.session.Session(
                    profile_name=cfg.profile, region_name=os.environ["AWS_REGION"]
                )
            return session.client(  # type: ignore[call-overload]
                self.service,
                endpoint_url=cfg.endpoint_url,
                config=BotoConfig(
                    connect_timeout=cfg.connect_timeout,
                    read_timeout=cfg.read_timeout,
                    retries={"total_max_attempts": cfg.max_attempts, "mode": "standard"},
                    user_agent_extra="leaseline",
                ),
            )
        except NoRegionError:
            raise ConfigError(
                f"store '{self.name}' ({self.type}) has no AWS region: set `region` in {where}, "
                "or AWS_DEFAULT_REGION / AWS_REGION, or a region in the AWS profile"
            ) from None
        except ProfileNotFound:
            raise ConfigError(
                f"{where}: AWS profile '{cfg.profile}' is not in the AWS config files "
                f"({os.environ.get('AWS_CONFIG_FILE', '~/.aws/config')})"
            ) from None

    def reauthenticate(self) -> None:
        """Drop the client so the next call re-reads the credential chain (rotated keys, SSO)."""
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            old.close()

    def close(self) -> None:
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            old.close()

    # -- calls ------------------------------------------------------------------------------------

    def _call(self, action: str, target: str, ref: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)``, with AWS errors translated; ``action`` is the IAM action it needs."""
        client = self.client()
        _in_call.depth = getattr(_in_call, "depth", 0) + 1
        try:
            return fn(client)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, client, action, target, ref) from exc
        finally:
            _in_call.depth -= 1

    def _translate(
        self, exc: Exception, client: Any, action: str, target: str, ref: str
    ) -> LeaselineError:
        region = client.meta.region_name
        endpoint = client.meta.endpoint_url
        where = f"store '{self.name}', region {region}"
        what = f"{action} on {target}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _NOT_FOUND:
                return SecretNotFound(
                    f"{ref} not found: no {self.noun} '{target}' in AWS region {region} "
                    f"(store '{self.name}')",
                    ref=ref,
                    store=self.name,
                )
            if code.startswith("AccessDenied") or code in _DENIED or status == 403:
                return AccessDenied(
                    self._denied_message(code, what, where), ref=ref, store=self.name
                )
            if code in _THROTTLED or status == 429 or status >= 500:
                return BackendUnavailable(
                    f"AWS {self.service} at {endpoint} could not serve {what} "
                    f"({code}, HTTP {status}); retrying",
                    ref=ref,
                    store=self.name,
                    transient=True,
                )
            if code == "InvalidRequestException" and "delet" in str(error.get("Message", "")):
                return SecretNotFound(
                    f"{ref} not found: {self.noun} '{target}' is scheduled for deletion ({where})",
                    ref=ref,
                    store=self.name,
                )
            detail = f": {str(error.get('Message', ''))[:300]}" if code in _SAFE_MESSAGE else ""
            return LeaselineError(
                f"AWS rejected {what} ({where}): {code}{detail}", ref=ref, store=self.name
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return AccessDenied(
                f"no usable AWS credentials for {what} ({where}, {type(exc).__name__}): "
                + _CREDENTIALS_HELP,
                ref=ref,
                store=self.name,
            )
        # refused, reset, DNS, connect/read timeouts
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return BackendUnavailable(
                f"AWS {self.service} endpoint {endpoint} is unreachable "
                f"({type(exc).__name__}) for {what} ({where})",
                ref=ref,
                store=self.name,
                transient=not isinstance(exc, SSLError),  # a bad certificate stays bad
            )
        if isinstance(exc, ParamValidationError):
            return InvalidReference(
                f"{ref}: botocore refuses the parameters of {what} before sending it "
                "(check the locator and the ?options: lengths, characters, number ranges)",
                ref=ref,
                store=self.name,
            )
        return LeaselineError(
            f"AWS call {what} failed ({where}): {type(exc).__name__}", ref=ref, store=self.name
        )

    def _denied_message(self, code: str, what: str, where: str) -> str:
        if code in {"ExpiredToken", "ExpiredTokenException"}:
            return (
                f"AWS denied {what} ({where}): the session token has expired; " + _CREDENTIALS_HELP
            )
        if code in {"UnrecognizedClientException", "InvalidClientTokenId"}:
            return (
                f"AWS denied {what} ({where}): the access key is not recognised ({code}); "
                + _CREDENTIALS_HELP
            )
        if code in {"SignatureDoesNotMatch", "IncompleteSignature", "InvalidSignatureException"}:
            return f"AWS denied {what} ({where}): the secret access key does not match ({code})"
        if code == "DecryptionFailure":
            return f"AWS denied {what} ({where}): the caller may not use the KMS key (kms:Decrypt)"
        return f"AWS denied {what} ({where}, {code}): grant the caller {what.split(' on ')[0]}"

    # -- the parts of the protocol every AWS store shares ------------------------------------------

    def renew(self, lease: Lease) -> Lease:
        return lease  # nothing here is renewable: the resolver issues a fresh credential instead

    def revoke(self, lease: Lease) -> None:
        pass  # Secrets Manager and SSM hand out no leases; STS credentials cannot be revoked
