"""The notification sinks, cluster-wide: a YAML file the chart mounts from a ConfigMap.

Sinks are the operator's, not the rollouts': a webhook URL is a credential, and a rollout's author
should not be able to send the cluster's decisions anywhere. Rollouts subscribe to sinks by name
(annotation `lossgate.io/notify`), or a sink takes every rollout (`rollouts: all`). A URL is given
inline (not secret) or by reference: `urlFrom.env` names an environment variable, which the chart
fills from a Secret (secretKeyRef), or `urlFrom.file` a mounted file.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lossgate.core.notify import NoticeEvent, Severity

ENV_FILE = "LOSSGATE_NOTIFICATIONS_FILE"


class SinkType(StrEnum):
    WEBHOOK = "webhook"  # JSON, schema in docs/notifications.md
    SLACK = "slack"  # Slack incoming webhook: Block Kit message
    CLOUDEVENTS = "cloudevents"  # CloudEvents 1.0 over HTTP, binary or structured mode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class UrlFrom(_Strict):
    env: str | None = Field(default=None, description="Environment variable holding the URL.")
    file: str | None = Field(default=None, description="File holding the URL (a mounted Secret key).")

    @model_validator(mode="after")
    def _one(self) -> UrlFrom:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of urlFrom.env or urlFrom.file")
        return self


class SinkConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    type: SinkType
    url: str | None = None
    url_from: UrlFrom | None = Field(default=None, alias="urlFrom")
    events: tuple[NoticeEvent, ...] = tuple(NoticeEvent)
    min_severity: Severity = Field(default=Severity.INFO, alias="minSeverity")
    rollouts: Literal["subscribed", "all"] = "subscribed"
    timeout_seconds: float = Field(default=5.0, gt=0, le=60, alias="timeoutSeconds")
    mode: Literal["binary", "structured"] = "binary"  # cloudevents only
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _url_once(self) -> SinkConfig:
        if (self.url is None) == (self.url_from is None):
            raise ValueError(f"sink {self.name}: give exactly one of url or urlFrom")
        return self

    def wants(self, event: NoticeEvent, severity: Severity, subscriptions: frozenset[str]) -> bool:
        if self.rollouts == "subscribed" and self.name not in subscriptions:
            return False
        return event in self.events and severity.rank >= self.min_severity.rank

    def resolve_url(self) -> str:
        """The URL, read now (a reference is read at startup; a rotated Secret needs a restart)."""
        if self.url is not None:
            url = self.url
        elif self.url_from is not None and self.url_from.env is not None:
            url = os.environ.get(self.url_from.env, "").strip()
            if not url:
                raise ValueError(f"sink {self.name}: urlFrom.env {self.url_from.env} is unset or empty")
        else:
            path = self.url_from.file if self.url_from is not None else None
            try:
                url = Path(path or "").read_text().strip()
            except OSError as err:
                raise ValueError(f"sink {self.name}: urlFrom.file cannot be read: {err}") from None
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"sink {self.name}: the URL must start with http:// or https://")
        return url


class RetryConfig(_Strict):
    attempts: int = Field(default=6, ge=1, le=50)
    initial_backoff_seconds: float = Field(default=1.0, gt=0, alias="initialBackoffSeconds")
    max_backoff_seconds: float = Field(default=60.0, gt=0, alias="maxBackoffSeconds")

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): doubling, capped."""
        return float(min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** (attempt - 1)))


class NotificationSettings(_Strict):
    sinks: tuple[SinkConfig, ...] = ()
    retry: RetryConfig = RetryConfig()
    queue_size: int = Field(default=1000, ge=1, alias="queueSize")

    @model_validator(mode="after")
    def _unique(self) -> NotificationSettings:
        names = [s.name for s in self.sinks]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"sink names must be unique: {sorted(dup)}")
        return self


def load_settings(path: str | None = None) -> NotificationSettings:
    """The settings from `path` (default: $LOSSGATE_NOTIFICATIONS_FILE); none configured: no sinks.
    A bad file stops the operator at startup with the file and the field, not at the first rollback."""
    path = path if path is not None else os.environ.get(ENV_FILE, "").strip()
    if not path:
        return NotificationSettings()
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        settings = NotificationSettings.model_validate(raw)
        for sink in settings.sinks:
            sink.resolve_url()
    except (OSError, yaml.YAMLError, ValidationError, ValueError) as err:
        raise SystemExit(f"{ENV_FILE}={path}: {err}; fix the file (docs/notifications.md)") from None
    return settings
