"""``resilience_*`` settings, read once into one frozen, validated object per app.

The store's settings are read here; each capability reads its own (``admission``,
``breakers``, ``providers``, ``fallbacks``, ``load``, ``monitoring``) through the same ``SettingsReader``,
which then refuses any ``resilience_*`` key none of them read. The settings reference is
``docs/settings.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .admission.settings import AdmissionSettings, read_admission_settings
from .breakers.settings import BreakerSettings, read_breaker_settings
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigurationError
from .fallbacks.settings import FallbackSettings, read_fallback_settings
from .load.settings import LoadSettings, read_load_settings
from .monitoring.settings import MonitoringSettings, read_monitoring_settings
from .providers.settings import ProviderSettings, read_provider_settings
from .validation import SettingsReader, integer, seconds

__all__ = ["ResilienceSettings", "known_settings"]


@dataclass(frozen=True, slots=True)
class ResilienceSettings:
    store_url: str
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
    ) -> ResilienceSettings:
        """Validate every ``resilience_*`` key; raise ``ConfigurationError`` on the first wrong one.
        ``namespace`` is the app's configuration namespace (Django's ``CELERY``), under which
        settings are spelled ``CELERY_RESILIENCE_TIERS``."""
        read = SettingsReader(conf)
        settings = cls.read(read, broker_url, clock)
        read.reject_unknown(namespace)
        return settings

    @classmethod
    def read(cls, read: SettingsReader, broker_url: str | None, clock: Clock) -> ResilienceSettings:
        return cls(
            store_url=_store_url(*read("store_url"), broker_url),
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


def known_settings() -> list[str]:
    """Every setting's name, as the capabilities read them."""
    read = SettingsReader({})
    ResilienceSettings.read(read, None, SYSTEM_CLOCK)
    return read.names


def _store_url(name: str, value: object, broker_url: str | None) -> str:
    if value is None:
        if broker_url and broker_url.split("://", 1)[0] in ("redis", "rediss"):
            return broker_url
        return "memory://"
    if not isinstance(value, str) or value.split("://", 1)[0] not in ("redis", "rediss", "unix", "memory"):
        raise ConfigurationError(name, "a URL starting redis://, rediss://, unix:// or memory://", value)
    return value


def _key_prefix(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ConfigurationError(name, "a non-empty string of at most 64 characters", value)
    if any(c in value for c in "{}*?[] \t\r\n"):
        raise ConfigurationError(name, "no braces, glob characters or white space", value)
    return value
