"""``resilience_*`` settings, read once into one frozen, validated object per app.

The store's settings are read here; each capability reads its own (``admission``,
``breakers``, ``providers``, ``fallbacks``, ``load``, ``monitoring``) through the same ``SettingsReader``,
which then refuses any ``resilience_*`` key none of them read. The settings reference is
``docs/settings.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

from .admission.settings import AdmissionSettings, read_admission_settings
from .breakers.settings import BreakerSettings, read_breaker_settings
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigurationError
from .fallbacks.settings import FallbackSettings, read_fallback_settings
from .load.settings import LoadSettings, read_load_settings
from .load.sojourn import DEFAULT_SHEDDING
from .monitoring.settings import MonitoringSettings, read_monitoring_settings
from .providers.settings import ProviderSettings, read_provider_settings
from .store.topology import parse_store_url
from .validation import SettingsReader, integer, seconds

__all__ = ["ResilienceSettings", "known_settings"]


@dataclass(frozen=True, slots=True)
class ResilienceSettings:
    store_url: str
    store_options: Mapping[str, Any]
    key_prefix: str
    key_shards: int
    store_timeout: float
    store_retry_interval: float
    admission: AdmissionSettings
    breakers: BreakerSettings
    providers: ProviderSettings
    fallbacks: FallbackSettings
    load: LoadSettings
    monitoring: MonitoringSettings

    @classmethod
    def from_conf(
        cls,
        conf: Mapping[str, Any],
        *,
        broker_url: str | None = None,
        namespace: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        broker_options: Mapping[str, Any] | None = None,
    ) -> ResilienceSettings:
        """Validate every ``resilience_*`` key; raise ``ConfigurationError`` on the first wrong one.
        ``namespace`` is the app's configuration namespace (Django's ``CELERY``), under which
        settings are spelled ``CELERY_RESILIENCE_TIERS``."""
        read = SettingsReader(conf)
        settings = cls.read(read, broker_url, clock, broker_options)
        read.reject_unknown(namespace)
        return settings

    @classmethod
    def read(
        cls,
        read: SettingsReader,
        broker_url: str | None,
        clock: Clock,
        broker_options: Mapping[str, Any] | None = None,
    ) -> ResilienceSettings:
        settings = cls(
            store_url=_store_url(*read("store_url"), broker_url, broker_options or {}),
            store_options=_store_options(*read("store_options", {})),
            key_prefix=_key_prefix(*read("key_prefix", "resilience")),
            key_shards=integer(*read("key_shards", 16), low=1, high=16384),
            store_timeout=seconds(*read("store_timeout", 0.25), positive=True),
            store_retry_interval=seconds(*read("store_retry_interval", 2.0)),
            admission=read_admission_settings(read),
            breakers=read_breaker_settings(read, clock),
            providers=read_provider_settings(read),
            fallbacks=read_fallback_settings(read),
            load=read_load_settings(read),
            monitoring=read_monitoring_settings(read),
        )
        _check_shedding(settings)
        return settings


def known_settings() -> list[str]:
    """Every setting's name, as the capabilities read them."""
    read = SettingsReader({})
    ResilienceSettings.read(read, None, SYSTEM_CLOCK)
    return read.names


def _store_url(name: str, value: object, broker_url: str | None, broker_options: Mapping[str, Any]) -> str:
    if value is None:
        scheme = broker_url.split("://", 1)[0] if broker_url else ""
        if broker_url and scheme in ("redis", "rediss"):
            return broker_url
        if broker_url and scheme == "sentinel":
            return _from_sentinel_broker(name, broker_url, broker_options)
        return "memory://"
    if isinstance(value, str) and value.startswith("memory://"):
        return value
    try:
        if not isinstance(value, str):
            raise ValueError("a URL string")
        parse_store_url(value)
    except ValueError as error:
        raise ConfigurationError(name, str(error), value) from None
    return value


def _from_sentinel_broker(name: str, broker_url: str, options: Mapping[str, Any]) -> str:
    """A ``sentinel://`` broker (``sentinel://h1:26379;sentinel://h2:26379`` with the
    ``master_name`` transport option) names the store too: the same master, as
    ``redis+sentinel://h1:26379,h2:26379/master_name/db``."""
    service = options.get("master_name")
    if not isinstance(service, str) or not service:
        raise ConfigurationError(
            name, "a store URL, or broker_transport_options['master_name'] for the sentinel:// broker", None
        )
    hosts, credentials, db = [], "", ""
    for part in broker_url.split(";"):
        parsed = urlsplit(part.strip())
        login, _, host = parsed.netloc.rpartition("@")
        credentials = credentials or login
        hosts.append(host)
        db = db or parsed.path.strip("/")
    auth = f"{credentials}@" if credentials else ""
    return f"redis+sentinel://{auth}{','.join(hosts)}/{quote(service, safe='')}" + (f"/{db}" if db else "")


def _store_options(name: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ConfigurationError(
            name,
            "a mapping of connection option to value (password, ssl_ca_certs, sentinel_kwargs...)",
            value,
        )
    return MappingProxyType(dict(value))


def _key_prefix(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ConfigurationError(name, "a non-empty string of at most 64 characters", value)
    if any(c in value for c in "{}*?[] \t\r\n"):
        raise ConfigurationError(name, "no braces, glob characters or white space", value)
    return value


def _check_shedding(settings: ResilienceSettings) -> None:
    """A request type the shedding settings name must exist, or its entry never applies."""
    known = set(settings.admission.request_types) | set(DEFAULT_SHEDDING)
    for request_type in settings.load.shedding:
        if request_type not in known:
            raise ConfigurationError(
                "resilience_shedding",
                f"request types named in resilience_request_types {sorted(known)}",
                request_type,
            )
