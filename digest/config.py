"""Configuration: ``config.toml`` plus ``DIGEST_<SECTION>_<KEY>`` environment overrides.

The file is read once at the entry point into a frozen :class:`Settings` and passed down.
Unknown keys and bad values raise :class:`ConfigError` naming the key and the file.
Secrets (the SMTP password, the signing secret) come only from the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import ConfigError
from digest.resources import default_config_path
from digest.subscriptions import MAX_PAPERS
from digest.tokens import MAX_AGE

# A pending subscriber must outlive the link that confirms it.
CONFIRM_DAYS = (MAX_AGE["confirm"] or 0) // 86400

SECRET_ENV = "DIGEST_SECRET_KEY"
CONFIG_ENV = "DIGEST_CONFIG"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """Where subscribers, papers and deliveries live."""

    url: str = "sqlite:///subscribers.db"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """The outgoing mail relay; an empty host means the embedded sink."""

    host: str = ""
    port: int = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    timeout: float = 30.0
    connections: int = 2
    from_address: str = "digest@localhost"
    from_name: str = "digest"
    ehlo_name: str = ""  # the name to greet the relay with; empty: this host's name


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinkSettings:
    """The embedded development SMTP server that stores mail in a Maildir."""

    maildir: str = "mail"
    host: str = "127.0.0.1"
    port: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SiteSettings:
    """How the service names itself in mail and links."""

    name: str = "digest"
    base_url: str = "http://localhost:8000"
    list_id: str = "digest.localhost"
    unsubscribe_mailto: str = "unsubscribe@localhost"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigestSettings:
    """What an edition holds and how it is cut."""

    timezone: str = "UTC"
    lookback_days: int = 3
    max_papers: int = 10
    snippet_chars: int = 420
    previews_dir: str = "previews"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeliverySettings:
    """How the outbox retries, leases and gives up."""

    max_attempts: int = 5
    retry_base_seconds: float = 60.0
    lease_seconds: float = 600.0
    bounce_limit: int = 3
    empty: Literal["skip", "note"] = "skip"
    rate_per_second: float = 0.0  # 0: as fast as the connections go
    compose_process_from: int = 5000  # due digests from which a second process composes; 0: never
    chunk_size: int = 500  # deliveries a sender takes at a time
    # Where bounces come back: each digest's envelope sender is this address with the
    # delivery's signed id after a "+" (VERP); empty: [smtp] from_address, and no bounce tracing.
    bounce_address: str = "bounces@localhost"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SchedulerSettings:
    """What `digest serve` runs on its own, and when."""

    ingest_cron: str = "0 5 * * *"
    tick_seconds: int = 60
    send: bool = True  # false: only plan; separate `digest worker` processes send


@dataclasses.dataclass(frozen=True, kw_only=True)
class DkimSettings:
    """Optional DKIM signing of every message; an empty key_file turns it off."""

    key_file: str = ""
    selector: str = ""
    domain: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestSettings:
    """How sources are fetched."""

    timeout: float = 20.0  # each wait: connecting, or the next bytes
    deadline: float = 120.0  # a whole fetch: connecting, redirects and every read
    max_bytes: int = 20_000_000  # the body, once decompressed
    max_entries: int = 2_000  # entries read from one source; the rest are left out and counted
    user_agent: str = "digest/0.1 (+https://github.com/digest; research-paper digest)"
    concurrency: int = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebSettings:
    """The web app of ``digest serve``: where it listens and how it treats visitors."""

    host: str = "127.0.0.1"
    port: int = 8000
    confirm_interval_seconds: int = 300
    subscribe_per_client_per_hour: int = 5  # subscribe requests from one client address
    subscribe_per_hour: int = 100  # subscribe requests in all, the form and mail together
    rank_per_client_per_minute: int = 60  # /api/rank requests from one client address
    pending_days: int = 7  # unconfirmed subscriptions are deleted this long after their request
    max_body_bytes: int = 65536
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"


@dataclasses.dataclass(frozen=True, kw_only=True)
class InboundSettings:
    """The inbound SMTP server for email commands (``digest inbound``; ``digest serve`` when on)."""

    enabled: bool = False  # true: `digest serve` runs it too
    host: str = "127.0.0.1"
    port: int = 2525  # 0 picks a free port
    address: str = "digest@localhost"  # commands in the subject or body
    subscribe_address: str = "subscribe@localhost"  # "": off
    unsubscribe_address: str = "unsubscribe@localhost"  # "": off
    max_message_bytes: int = 65536
    replies_per_hour: int = 5  # per address
    subscribe_per_domain_per_hour: int = 10  # subscribe requests from one sender domain


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceSettings:
    """One configured source: a name and a location (file path, URL or bundled:NAME)."""

    name: str
    location: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting, typed and validated; build it with :func:`load_settings`."""

    database: DatabaseSettings = DatabaseSettings()
    smtp: SmtpSettings = SmtpSettings()
    sink: SinkSettings = SinkSettings()
    site: SiteSettings = SiteSettings()
    digest: DigestSettings = DigestSettings()
    delivery: DeliverySettings = DeliverySettings()
    ingest: IngestSettings = IngestSettings()
    web: WebSettings = WebSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    dkim: DkimSettings = DkimSettings()
    inbound: InboundSettings = InboundSettings()
    sources: tuple[SourceSettings, ...] = ()
    secret_key: str = dataclasses.field(default="", repr=False)
    config_path: str = ""
    base_dir: str = "."

    def path(self, relative: str) -> Path:
        """Resolve a configured path against the working directory the settings were made in."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def zone(self) -> ZoneInfo:
        """The edition time zone."""
        return ZoneInfo(self.digest.timezone)


_SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseSettings,
    "smtp": SmtpSettings,
    "sink": SinkSettings,
    "site": SiteSettings,
    "digest": DigestSettings,
    "delivery": DeliverySettings,
    "ingest": IngestSettings,
    "web": WebSettings,
    "scheduler": SchedulerSettings,
    "dkim": DkimSettings,
    "inbound": InboundSettings,
}
# Secrets are read from the environment only: a value for them in the file is refused.
_ENV_ONLY = {("smtp", "password")}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check and convert one value to the annotated type, or raise ConfigError."""
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise ConfigError(
                f"{where}: must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: must be an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: must be a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):  # pragma: no cover - no optional settings yet
        return value
    raise ConfigError(f"{where}: unsupported setting type {annotation!r}")


def _section(cls: type[Any], data: Mapping[str, Any], *, name: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{source}: [{name}] {key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown setting (known: {', '.join(sorted(fields))})")
        if (name, key) in _ENV_ONLY:
            raise ConfigError(
                f"{where}: secrets are not read from the file; set DIGEST_{name.upper()}_{key.upper()}"
            )
        values[key] = _coerce(value, hints[key], where)
    return cls(**values)


def _validate(settings: Settings, source: str) -> None:
    checks: list[tuple[bool, str]] = [
        (settings.smtp.port > 0 and settings.smtp.port < 65536, "[smtp] port: must be 1-65535"),
        (0 <= settings.sink.port < 65536, "[sink] port: must be 0-65535 (0 picks a free port)"),
        (settings.smtp.connections >= 1, "[smtp] connections: must be at least 1"),
        (settings.smtp.timeout > 0, "[smtp] timeout: must be positive"),
        (
            re.fullmatch(r"[A-Za-z0-9.-]{0,253}|\[[0-9A-Fa-f:.]{2,45}\]", settings.smtp.ehlo_name)
            is not None,
            "[smtp] ehlo_name: must be a host name (letters, digits, dots, hyphens) or an "
            "address literal like [192.0.2.1]",
        ),
        (
            1 <= settings.digest.max_papers <= MAX_PAPERS,
            f"[digest] max_papers: must be 1-{MAX_PAPERS}, the most papers a digest may carry",
        ),
        (settings.digest.lookback_days >= 1, "[digest] lookback_days: must be at least 1"),
        (settings.digest.snippet_chars >= 40, "[digest] snippet_chars: must be at least 40"),
        (settings.delivery.max_attempts >= 1, "[delivery] max_attempts: must be at least 1"),
        (
            settings.delivery.retry_base_seconds > 0,
            "[delivery] retry_base_seconds: must be positive",
        ),
        (settings.delivery.lease_seconds > 0, "[delivery] lease_seconds: must be positive"),
        (
            1 <= settings.delivery.chunk_size <= 10_000,
            "[delivery] chunk_size: must be 1-10000",
        ),
        (
            not settings.delivery.bounce_address
            or (
                _is_address(settings.delivery.bounce_address)
                and "+" not in settings.delivery.bounce_address
            ),
            "[delivery] bounce_address: must be an address without '+' (digest adds "
            "'+' and the delivery's id), or empty",
        ),
        (settings.delivery.bounce_limit >= 1, "[delivery] bounce_limit: must be at least 1"),
        (settings.delivery.rate_per_second >= 0, "[delivery] rate_per_second: must be 0 or more"),
        (
            settings.delivery.compose_process_from >= 0,
            "[delivery] compose_process_from: must be 0 or more",
        ),
        (settings.scheduler.tick_seconds >= 1, "[scheduler] tick_seconds: must be at least 1"),
        (
            not settings.dkim.key_file or bool(settings.dkim.selector and settings.dkim.domain),
            "[dkim] selector and domain: both are needed with key_file",
        ),
        (settings.ingest.max_bytes >= 1024, "[ingest] max_bytes: must be at least 1024"),
        (settings.ingest.timeout > 0, "[ingest] timeout: must be positive"),
        (settings.ingest.deadline > 0, "[ingest] deadline: must be positive"),
        (settings.ingest.max_entries >= 1, "[ingest] max_entries: must be at least 1"),
        (settings.ingest.concurrency >= 1, "[ingest] concurrency: must be at least 1"),
        (0 < settings.web.port < 65536, "[web] port: must be 1-65535"),
        (
            settings.web.confirm_interval_seconds >= 0,
            "[web] confirm_interval_seconds: must be 0 or more",
        ),
        (
            settings.web.subscribe_per_client_per_hour >= 1,
            "[web] subscribe_per_client_per_hour: must be at least 1",
        ),
        (settings.web.subscribe_per_hour >= 1, "[web] subscribe_per_hour: must be at least 1"),
        (
            settings.web.rank_per_client_per_minute >= 1,
            "[web] rank_per_client_per_minute: must be at least 1",
        ),
        (
            settings.web.pending_days >= CONFIRM_DAYS,
            f"[web] pending_days: must be at least {CONFIRM_DAYS}, the days a confirmation "
            "link works",
        ),
        (settings.web.max_body_bytes >= 1024, "[web] max_body_bytes: must be at least 1024"),
        (
            0 <= settings.inbound.port < 65536,
            "[inbound] port: must be 0-65535 (0 picks a free port)",
        ),
        (
            1024 <= settings.inbound.max_message_bytes <= 10_485_760,
            "[inbound] max_message_bytes: must be 1024-10485760",
        ),
        (settings.inbound.replies_per_hour >= 1, "[inbound] replies_per_hour: must be at least 1"),
        (
            settings.inbound.subscribe_per_domain_per_hour >= 1,
            "[inbound] subscribe_per_domain_per_hour: must be at least 1",
        ),
        (
            _is_address(settings.inbound.address),
            "[inbound] address: must be an address like digest@example.org",
        ),
        (
            all(
                not a or _is_address(a)
                for a in (settings.inbound.subscribe_address, settings.inbound.unsubscribe_address)
            ),
            "[inbound] subscribe_address and unsubscribe_address: must be addresses, or empty",
        ),
        (
            _distinct(
                settings.inbound.address,
                settings.inbound.subscribe_address,
                settings.inbound.unsubscribe_address,
            ),
            "[inbound] address, subscribe_address and unsubscribe_address: must differ",
        ),
        (
            "://" in settings.database.url,
            "[database] url: must be a URL like sqlite:///subscribers.db",
        ),
        (
            settings.site.base_url.startswith(("http://", "https://")),
            "[site] base_url: must start with http:// or https://",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{source}: {message}")
    try:
        ZoneInfo(settings.digest.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{source}: [digest] timezone: unknown time zone {settings.digest.timezone!r}"
        ) from None
    # imported here: a composing process gets its settings already checked (outbox)
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(settings.scheduler.ingest_cron, timezone=settings.digest.timezone)
    except ValueError as e:
        raise ConfigError(
            f"{source}: [scheduler] ingest_cron: not a crontab line "
            f"(minute hour day month weekday): {settings.scheduler.ingest_cron!r}: {e}"
        ) from None


def _is_address(value: str) -> bool:
    """A plain local@domain (full validation of readers' addresses lives in subscriptions)."""
    local, at, domain = value.partition("@")
    return bool(
        at
        and local
        and domain
        and "@" not in domain
        and value.isprintable()
        and not any(c.isspace() or c in '<>,;"' for c in value)
    )


def _distinct(*addresses: str) -> bool:
    used = [a.lower() for a in addresses if a]
    return len(used) == len(set(used))


def _sources(raw: Any, source: str) -> tuple[SourceSettings, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: [[sources]]: must be an array of tables")
    out: list[SourceSettings] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{source}: [[sources]] #{i + 1}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a table with name and location")
        unknown = set(item) - {"name", "location"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown setting {sorted(unknown)[0]!r} (known: location, name)"
            )
        location = item.get("location")
        if not isinstance(location, str) or not location.strip():
            raise ConfigError(f"{where} location: must be a non-empty string")
        name = item.get("name", location)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where} name: must be a non-empty string")
        if name in seen:
            raise ConfigError(f"{where} name: duplicate source name {name!r}")
        seen.add(name)
        out.append(SourceSettings(name=name.strip(), location=location.strip()))
    return tuple(out)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, cls in _SECTIONS.items():
        prefix = f"DIGEST_{name.upper()}_"
        for field in dataclasses.fields(cls):
            value = env.get(prefix + field.name.upper())
            if value is not None:
                out.setdefault(name, {})[field.name] = value
    return out


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Settings:
    """Read the TOML file (or the default one), apply environment overrides, validate."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    if path is None:
        local = Path.cwd() / "config.toml"
        path = local if local.is_file() else default_config_path()
    file = Path(path)
    source = str(file)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: configuration file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot read: {e}") from e

    unknown = set(raw) - set(_SECTIONS) - {"sources"}
    if unknown:
        known = ", ".join(sorted([*_SECTIONS, "sources"]))
        raise ConfigError(f"{source}: unknown section [{sorted(unknown)[0]}] (known: {known})")
    overrides = _env_overrides(env)
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        data = raw.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        section = _section(cls, data, name=name, source=source)
        if name in overrides:
            env_values = {
                key: _coerce(
                    value,
                    typing.get_type_hints(cls)[key],
                    f"environment DIGEST_{name.upper()}_{key.upper()}",
                )
                for key, value in overrides[name].items()
            }
            section = dataclasses.replace(section, **env_values)
        sections[name] = section
    settings = Settings(
        **sections,
        sources=_sources(raw.get("sources", []), source),
        secret_key=env.get(SECRET_ENV, ""),
        config_path=source,
        base_dir=str(Path(base_dir) if base_dir is not None else Path.cwd()),
    )
    _validate(settings, source)
    return settings


def ensure_secret(settings: Settings) -> Settings:
    """Return settings with a signing secret: the environment's, or one kept beside the database."""
    if settings.secret_key:
        return settings
    db_path = sqlite_path(settings.database.url)
    folder = db_path.parent if db_path is not None else Path(settings.base_dir)
    if db_path is not None and not db_path.is_absolute():
        folder = (Path(settings.base_dir) / db_path).parent
    key_file = folder / ".secret_key"
    try:
        if not key_file.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first: use theirs
                pass
            else:
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(secrets.token_urlsafe(48) + "\n")
        key = key_file.read_text(encoding="ascii").strip()
    except OSError as e:
        raise ConfigError(
            f"cannot keep the signing secret in {key_file} (beside the database of [database] "
            f"url): {e.strerror or e}; set {SECRET_ENV} or choose a database path digest can "
            "write to"
        ) from e
    if not key:
        raise ConfigError(
            f"{key_file}: the signing secret file is empty; delete it or set {SECRET_ENV}"
        )
    return dataclasses.replace(settings, secret_key=key)


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or None for other databases and memory."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)
