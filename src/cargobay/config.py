"""Configuration: defaults, then a YAML file, then CARGOBAY_* environment variables, then flags.

Environment variables name a setting by its path in the file, sections separated by a double
underscore: `CARGOBAY_LISTEN`, `CARGOBAY_STORAGE__DRIVER`, `CARGOBAY_REGISTRY__DELETE_ENABLED`.
Their values are read as the setting's type says (`true`, `8`, `text`, a YAML list `[a, b]`).
Unknown settings are errors, so a typo never silently falls back to a default.

A config file may take values from the environment: `${VAR}` (an error when VAR is unset) and
`${VAR:-default}` (the default when VAR is unset or empty), anywhere in a string value.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "CARGOBAY_"


class ConfigError(Exception):
    """One or more problems in the configuration, each naming its setting's key path."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass
class S3Config:
    bucket: str = ""
    # Empty: AWS itself. For other S3-compatible stores, e.g. http://127.0.0.1:8333.
    endpoint: str | None = None
    region: str | None = None
    # Keys are written under this prefix, so several registries can share a bucket.
    prefix: str = ""
    # Address buckets as endpoint/bucket/key (most self-hosted stores) instead of
    # bucket.endpoint/key (AWS's default).
    path_style: bool = False
    # Unset: the standard AWS chain (AWS_* environment variables, profile, instance role).
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    # Answer blob GETs with a 307 to a presigned URL instead of streaming through the registry.
    redirect: bool = True
    redirect_expiry_seconds: int = 1200
    # Multipart part size while streaming an upload to the store (at least 5 MiB).
    part_size_mib: int = 8


@dataclass
class StorageConfig:
    driver: str = "filesystem"  # or s3
    # filesystem: where blobs and staged uploads live; default: the data directory.
    path: str | None = None
    s3: S3Config = field(default_factory=S3Config)


@dataclass
class MetadataConfig:
    driver: str = "sqlite"  # or postgres
    # postgres: a libpq URL, e.g. postgresql://user:password@db.internal:5432/cargobay.
    url: str | None = None
    # postgres: connections per worker process.
    pool_size: int = 10
    # sqlite: the database file; default: <data_dir>/metadata.db.
    path: str | None = None
    # sqlite: FULL makes every commit durable across power loss at the cost of an fsync;
    # NORMAL (WAL) never corrupts the database but may lose the last commits on power loss.
    synchronous: str = "FULL"


@dataclass
class RegistryConfig:
    # Allow DELETE of manifests, tags and blobs; when false they answer 405 UNSUPPORTED.
    delete_enabled: bool = True
    # Mount a blob that exists anywhere in the registry when a client asks to mount it without
    # `from` (or from a repository that lacks it), instead of making it upload the bytes.
    auto_mount: bool = True
    # Unfinished uploads untouched for this long are removed.
    upload_expiry_seconds: int = 7 * 24 * 3600
    # Largest manifest accepted (413 above it). The spec asks for at least 4 MiB.
    max_manifest_bytes: int = 4 * 1024 * 1024
    # Maintenance: pushes and deletes answer 405 UNSUPPORTED, pulls keep working.
    read_only: bool = False


@dataclass
class TLSConfig:
    # PEM files; both set: serve HTTPS. Relative paths resolve against the config file's folder.
    certificate: str | None = None
    key: str | None = None


@dataclass
class AccessRuleConfig:
    users: list[str] = field(default_factory=list)  # names, "*" (any signed-in), "anonymous"
    repositories: list[str] = field(default_factory=list)  # globs; "*" also matches "/"
    actions: list[str] = field(default_factory=list)  # pull, push, delete, "*"


@dataclass
class TokenConfig:
    # issuer and signing_key set: Docker token authentication, with the built-in token server at
    # /auth/token issuing JWTs signed with signing_key (a PEM EC P-256, RSA or Ed25519 key).
    issuer: str | None = None
    service: str = "cargobay"
    signing_key: str | None = None
    # The token endpoint's public URL (default: this server's /auth/token).
    realm: str | None = None
    expiration_seconds: int = 300
    # Also accept tokens signed by the keys in this JWKS file or URL (an external token server with
    # the same issuer and service; set realm to its URL). Without signing_key, the built-in
    # token server is off.
    jwks: str | None = None
    # Also accept tokens that carry their signing certificate chain (x5c) up to a certificate
    # in this PEM bundle, as distribution's rootcertbundle.
    root_certificates: str | None = None


@dataclass
class GroupConfig:
    name: str = ""
    users: list[str] = field(default_factory=list)


@dataclass
class AuthConfig:
    # An Apache htpasswd file with bcrypt entries: enables HTTP basic authentication.
    htpasswd: str | None = None
    realm: str = "cargobay"
    # Who may do what; empty: every signed-in user may do everything, anonymous users nothing.
    # A rule's users may name groups as "group:NAME".
    access: list[AccessRuleConfig] = field(default_factory=list)
    groups: list[GroupConfig] = field(default_factory=list)
    # Users who may do everything everywhere.
    admins: list[str] = field(default_factory=list)
    token: TokenConfig = field(default_factory=TokenConfig)


@dataclass
class WebhookConfig:
    """One endpoint that receives distribution-compatible event envelopes by POST."""

    url: str = ""
    name: str = ""  # in logs and metrics; default: the URL's host
    # Extra request headers, each "Name: value", e.g. "Authorization: Bearer xyz".
    headers: list[str] = field(default_factory=list)
    timeout_seconds: int = 5
    # Failed deliveries are retried with exponential backoff, from backoff_seconds up to
    # max_backoff_seconds; events wait in the durable queue meanwhile, in order.
    backoff_seconds: int = 1
    max_backoff_seconds: int = 300
    # Only events with these actions (push, pull, delete) and target media types; empty: all.
    actions: list[str] = field(default_factory=list)
    media_types: list[str] = field(default_factory=list)


@dataclass
class NotificationsConfig:
    endpoints: list[WebhookConfig] = field(default_factory=list)


@dataclass
class HTTPConfig:
    # A connection with no request in progress for this long is closed: idle between
    # requests, or still sending its request line and headers (slow-loris).
    idle_timeout_seconds: int = 60
    # A request body is cut off with 408 when, over any period of body_idle_timeout_seconds,
    # fewer than max(1, body_min_bytes_per_second x that period) bytes arrive: a stalled or
    # trickling client holds an upload no longer than this.
    body_idle_timeout_seconds: int = 60
    body_min_bytes_per_second: int = 1024


@dataclass
class RateLimitConfig:
    # Requests per second per client address and per signed-in user on /v2/ (0: no limit),
    # with bursts of up to `burst` requests; counted per worker process. Over it: 429.
    per_client: int = 0
    per_user: int = 0
    burst: int = 100


@dataclass
class MetricsConfig:
    # HOST:PORT of the Prometheus /metrics listener, apart from the registry's own; unset: off.
    listen: str | None = None


@dataclass
class GCConfig:
    """Online garbage collection (cargobay.lifecycle.gc)."""

    enabled: bool = True
    # How often one process of the registry (any instance) reviews what changed.
    interval_seconds: int = 600
    # Grace delay: nothing uploaded, mounted, pulled (HEAD/GET), or unreferenced within it is
    # collected, so a client between checking a blob and pushing its manifest is never hurt.
    delay_seconds: int = 86400
    # The sweep for bytes the metadata does not know (left by a crash): how often it walks
    # the blob store, and at most how many objects per second it looks at.
    sweep_interval_seconds: int = 86400
    sweep_objects_per_second: int = 1000


@dataclass
class ImmutableTagRuleConfig:
    """Tags that, once pushed, never move to another manifest and are never deleted
    (cargobay.lifecycle.immutable)."""

    repositories: list[str] = field(default_factory=list)  # globs; "*" also matches "/"
    # Python regular expressions, searched in the tag (anchor them: "^v[0-9]").
    tags: list[str] = field(default_factory=list)


@dataclass
class QuotaConfig:
    """Limits on what the repositories matching `repositories` store, counted together
    (cargobay.lifecycle.quota); null: unlimited."""

    repositories: list[str] = field(default_factory=list)  # globs; "*" also matches "/"
    # Bytes of the blobs linked into them, each blob once: a number, or with a unit
    # (KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024), e.g. 10GiB.
    max_bytes: int | str | None = None
    max_tags: int | None = None


@dataclass
class KeepTagsConfig:
    """Which tags a retention policy keeps; every other tag of its repositories is deleted."""

    # Python regular expressions, searched in the tag (anchor them: "^v[0-9]").
    patterns: list[str] = field(default_factory=list)
    # The N tags pushed last (each tag's last push).
    most_recent: int | None = None
    # Durations: a number and a unit, s, m, h, d or w ("30d").
    pushed_within: str | None = None
    pulled_within: str | None = None  # the manifest the tag points at


@dataclass
class RetentionPolicyConfig:
    """A retention policy (cargobay.lifecycle.retention) for the repositories matching one of
    its globs; of several policies, the first that matches a repository applies to it."""

    repositories: list[str] = field(default_factory=list)  # globs; "*" also matches "/"
    keep_tags: KeepTagsConfig | None = None  # unset: no tag is deleted
    # Delete untagged manifests pushed (and pulled) longer ago than this duration.
    delete_untagged_after: str | None = None
    # Delete the referrers (signatures, SBOMs) of a manifest the policy deletes.
    delete_referrers: bool = False


@dataclass
class RetentionConfig:
    # Only log (and list, in `cargobay retention`) what the policies would delete.
    dry_run: bool = False
    # How often one process of the registry (any instance) applies the policies.
    interval_seconds: int = 3600
    policies: list[RetentionPolicyConfig] = field(default_factory=list)


@dataclass
class Config:
    listen: str = "127.0.0.1:5000"
    data_dir: str = "./data"
    # Worker processes; 0 means one per CPU.
    workers: int = 0
    log_level: str = "info"
    # text (for people), json or logfmt (for log pipelines); applies to every log line.
    log_format: str = "text"
    # One line per request (logger cargobay.access, at info level).
    access_log: bool = True
    # Shared by every instance of one registry (set it the same everywhere, keep it secret):
    # the built-in token server derives its signing key from it when auth.token has no
    # signing_key file.
    secret: str | None = None
    storage: StorageConfig = field(default_factory=StorageConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    gc: GCConfig = field(default_factory=GCConfig)
    immutable_tags: list[ImmutableTagRuleConfig] = field(default_factory=list)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    quotas: list[QuotaConfig] = field(default_factory=list)

    @property
    def host_port(self) -> tuple[str, int]:
        return _host_port(self.listen, "listen")

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        listen = self.metrics.listen
        return _host_port(listen, "metrics.listen") if listen else None

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    @property
    def storage_path(self) -> Path:
        return Path(self.storage.path or self.data_dir)

    @property
    def metadata_path(self) -> Path:
        return Path(self.metadata.path or Path(self.data_dir) / "metadata.db")


def _host_port(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{name} must be HOST:PORT, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    data: dict[str, Any] = {}
    problems: list[str] = []
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        data = _interpolate(loaded, os.environ if environ is None else environ, "", problems)
    for name, value in (os.environ if environ is None else environ).items():
        if name.startswith(ENV_PREFIX):
            keys = name[len(ENV_PREFIX) :].lower().split("__")
            _set(data, keys, _Interpolated(value))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(data, dotted.split("."), value)
    config: Config = _build(Config, data, "", problems)
    if path is not None:
        _resolve_paths(config, Path(path).parent)
    problems += _check(config)
    if problems:
        raise ConfigError(*problems)
    return config


SECRET_SETTINGS = ("secret", "storage.s3.secret_access_key", "storage.s3.session_token")


def masked(config: Config) -> dict[str, Any]:
    """The configuration as plain data with secrets replaced by "***" (for `config dump`)."""
    data = dataclasses.asdict(config)
    for dotted in SECRET_SETTINGS:
        *sections, key = dotted.split(".")
        section = data
        for name in sections:
            section = section[name]
        if section[key] is not None:
            section[key] = "***"
    url = data["metadata"]["url"]
    if url:
        data["metadata"]["url"] = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return data


def _check(config: Config) -> list[str]:
    """Problems no single setting's type catches: values out of range, settings that need
    each other."""
    problems = []

    def need(condition: object, problem: str) -> None:
        if not condition:
            problems.append(problem)

    for address in ("host_port", "metrics_host_port"):
        try:
            getattr(config, address)
        except ConfigError as exc:
            problems += exc.problems
    need(
        config.storage.driver in {"filesystem", "s3"},
        f"storage.driver: unknown storage driver {config.storage.driver!r}",
    )
    need(
        config.storage.driver != "s3" or config.storage.s3.bucket,
        "storage.s3.bucket is required with the s3 driver",
    )
    need(
        config.storage.s3.part_size_mib >= 5,
        "storage.s3.part_size_mib must be at least 5 (S3's smallest part)",
    )
    need(
        config.metadata.driver in {"sqlite", "postgres"},
        f"metadata.driver: unknown metadata driver {config.metadata.driver!r}",
    )
    need(
        config.metadata.driver != "postgres" or config.metadata.url,
        "metadata.url is required with the postgres driver",
    )
    need(config.metadata.pool_size >= 1, "metadata.pool_size must be at least 1")
    need(config.gc.interval_seconds >= 1, "gc.interval_seconds must be at least 1")
    need(config.gc.delay_seconds >= 0, "gc.delay_seconds must not be negative")
    need(config.gc.sweep_interval_seconds >= 1, "gc.sweep_interval_seconds must be at least 1")
    need(config.gc.sweep_objects_per_second >= 1, "gc.sweep_objects_per_second must be at least 1")
    problems += _check_retention(config.retention)
    need(config.http.idle_timeout_seconds >= 1, "http.idle_timeout_seconds must be at least 1")
    need(
        config.http.body_idle_timeout_seconds >= 1,
        "http.body_idle_timeout_seconds must be at least 1",
    )
    need(
        config.http.body_min_bytes_per_second >= 0,
        "http.body_min_bytes_per_second must not be negative",
    )
    need(
        config.metadata.synchronous.upper() in {"OFF", "NORMAL", "FULL", "EXTRA"},
        "metadata.synchronous must be OFF, NORMAL, FULL or EXTRA",
    )
    need(bool(config.tls.certificate) == bool(config.tls.key), "tls needs both certificate and key")
    need(config.log_format in {"text", "json", "logfmt"}, "log_format must be text, json or logfmt")
    need(
        config.log_level in {"debug", "info", "warning", "error"},
        "log_level must be debug, info, warning or error",
    )
    token = config.auth.token
    signs = token.signing_key or (token.issuer and config.secret)
    verifiable = signs or token.jwks or token.root_certificates
    need(
        bool(token.issuer) == bool(verifiable),
        "auth.token needs an issuer and a signing_key (or secret), jwks or root_certificates",
    )
    need(
        not verifiable or signs or token.realm,
        "auth.token without signing_key needs realm (the token server)",
    )
    need(
        not token.issuer or config.auth.htpasswd,
        "auth.token needs auth.htpasswd: the token server signs users in",
    )
    groups = {g.name for g in config.auth.groups}
    for index, rule in enumerate(config.auth.access):
        where = f"auth.access[{index}]"
        for who in rule.users:
            need(
                not who.startswith("group:") or who[6:] in groups,
                f"{where}.users names unknown group {who[6:]!r}",
            )
        for action in sorted(set(rule.actions) - {"pull", "push", "delete", "*"}):
            problems.append(f"{where}.actions: unknown action {action!r}")
    for index, endpoint in enumerate(config.notifications.endpoints):
        where = f"notifications.endpoints[{index}]"
        need(
            endpoint.url.startswith(("http://", "https://")), f"{where}.url must be an http(s) URL"
        )
        for action in sorted(set(endpoint.actions) - {"push", "pull", "delete"}):
            problems.append(f"{where}.actions: unknown action {action!r}")
        for header in endpoint.headers:
            need(":" in header, f"{where}.headers: {header!r} is not 'Name: value'")
    for index, immutable in enumerate(config.immutable_tags):
        where = f"immutable_tags[{index}]"
        need(immutable.repositories, f"{where}.repositories must name at least one glob")
        need(immutable.tags, f"{where}.tags must name at least one regular expression")
        for position, pattern in enumerate(immutable.tags):
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(
                    f"{where}.tags[{position}]: invalid regular expression {pattern!r}: {exc}"
                )
    for index, quota in enumerate(config.quotas):
        where = f"quotas[{index}]"
        need(quota.repositories, f"{where}.repositories must name at least one glob")
        if quota.max_bytes is not None:
            try:
                parse_size(quota.max_bytes)
            except ValueError as exc:
                problems.append(f"{where}.max_bytes: {exc}")
        need(
            quota.max_tags is None or quota.max_tags >= 0, f"{where}.max_tags must not be negative"
        )
    return problems


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?", re.ASCII | re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1} | {
    unit: base**power
    for power, letter in enumerate("kmgt", start=1)
    for unit, base in ((f"{letter}b", 1000), (f"{letter}ib", 1024))
}


def parse_size(value: int | str) -> int:
    """Bytes from a number or a size with a unit: 10GiB, 1.5 GB, 512 (ValueError if neither)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, not {value}")
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not a size: a number of bytes, or one with a unit"
            " (KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 10GiB"
        )
    return int(float(match[1]) * _SIZE_UNITS[(match[2] or "").lower()])


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])", re.ASCII)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "30d" (units s, m, h, d, w); ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: a number and s, m, h, d or w, e.g. 30d")
    return float(match[1]) * _DURATION_UNITS[match[2]]


def _check_retention(retention: RetentionConfig) -> list[str]:
    problems = []
    if retention.interval_seconds < 1:
        problems.append("retention.interval_seconds must be at least 1")
    for index, policy in enumerate(retention.policies):
        where = f"retention.policies[{index}]"
        if not policy.repositories:
            problems.append(f"{where}.repositories must name at least one glob")
        durations = {"delete_untagged_after": policy.delete_untagged_after}
        keep = policy.keep_tags
        if keep is not None:
            durations |= {
                "keep_tags.pushed_within": keep.pushed_within,
                "keep_tags.pulled_within": keep.pulled_within,
            }
            if not (keep.patterns or keep.most_recent or keep.pushed_within or keep.pulled_within):
                problems.append(
                    f"{where}.keep_tags keeps nothing: set patterns, most_recent, pushed_within"
                    " or pulled_within (without keep_tags no tag is deleted)"
                )
            if keep.most_recent is not None and keep.most_recent < 1:
                problems.append(f"{where}.keep_tags.most_recent must be at least 1")
            for position, pattern in enumerate(keep.patterns):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    problems.append(
                        f"{where}.keep_tags.patterns[{position}]: invalid regular expression"
                        f" {pattern!r}: {exc}"
                    )
        for key, text in durations.items():
            if text is not None:
                try:
                    parse_duration(text)
                except ValueError as exc:
                    problems.append(f"{where}.{key}: {exc}")
    return problems


def _resolve_paths(config: Config, folder: Path) -> None:
    """Files named in a config file are relative to that file, not to the working directory."""

    def resolve(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute() or "://" in value:
            return value
        return str(folder / value)

    config.tls.certificate = resolve(config.tls.certificate)
    config.tls.key = resolve(config.tls.key)
    config.auth.htpasswd = resolve(config.auth.htpasswd)
    config.auth.token.signing_key = resolve(config.auth.token.signing_key)
    config.auth.token.jwks = resolve(config.auth.token.jwks)
    config.auth.token.root_certificates = resolve(config.auth.token.root_certificates)


class _Interpolated(str):
    """A string from the environment (a CARGOBAY_* variable or ${VAR} in the file): it may
    stand for a number, a boolean, a list or nothing, as the setting's type says."""


def _yaml_list(value: str, name: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"{name} must be a YAML list, not {value!r}") from None


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, environ: Mapping[str, str], where: str, problems: list[str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} (default when unset or empty) in every string of a
    loaded config file; $$ is a literal $."""
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, f"{where}{k}.", problems) for k, v in value.items()}
    if isinstance(value, list):
        return [
            _interpolate(v, environ, f"{where[:-1]}[{i}].", problems) for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name is None:
            return "$"
        found = environ.get(name, "")
        if found:
            return found
        if default is not None:
            return default
        problems.append(f"{where[:-1]}: environment variable {name} is not set")
        return ""

    return _Interpolated(_VARIABLE.sub(substitute, value))


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = data.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key} is not a section")
        data = child
    data[keys[-1]] = value


def _build(cls: type[Any], data: Mapping[str, Any], where: str, problems: list[str]) -> Any:
    """The dataclass `cls` from `data`; a setting with a problem is noted and keeps its
    default, so that every problem is found in one pass."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for name in sorted(set(data) - known):
        problems.append(f"unknown setting {where}{name}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in known:
            continue
        try:
            values[name] = _value(hints[name], value, f"{where}{name}", problems)
        except ConfigError as exc:
            problems += exc.problems
    return cls(**values)


def _value(kind: Any, value: Any, name: str, problems: list[str]) -> Any:
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    section = next((o for o in options if dataclasses.is_dataclass(o)), None)
    if section is not None and not (value is None and type(None) in options):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a section")
        return _build(section, value, f"{name}.", problems)  # type: ignore[arg-type]
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if isinstance(value, _Interpolated):
            value = _yaml_list(value, name)
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list")
        return [_value(item, v, f"{name}[{i}]", problems) for i, v in enumerate(value)]
    return _coerce(kind, value, name)


def _coerce(kind: Any, value: Any, name: str) -> Any:
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if isinstance(value, _Interpolated):
        value = _from_variable(value, options)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is str and isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{name} must be {expected}, not {value!r}")


def _from_variable(value: str, options: tuple[Any, ...]) -> Any:
    if value == "" and type(None) in options:
        return None
    if int in options and value.strip().lstrip("-").isdigit():
        return int(value)
    if bool in options and value.strip().lower() in BOOLEANS:
        return BOOLEANS[value.strip().lower()]
    return str(value)


BOOLEANS = {"true": True, "yes": True, "on": True, "1": True}
BOOLEANS |= {"false": False, "no": False, "off": False, "0": False}
