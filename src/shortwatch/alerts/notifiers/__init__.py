"""Notifiers: one module per channel behind the protocol in base.py, built from config here."""

from __future__ import annotations

from pathlib import Path

from shortwatch.alerts.notifiers.base import Message, Notifier, PermanentError
from shortwatch.settings import (
    AlertmanagerNotifier,
    EmailNotifier,
    MqttNotifier,
    NotifierBase,
    SlackNotifier,
    WebhookNotifier,
)

__all__ = ["Message", "Notifier", "PermanentError", "build_notifier"]


def build_notifier(cfg: NotifierBase, station: str, state_dir: Path) -> Notifier:
    """The notifier for one [[alerts.notifiers]] entry (secrets are read here)."""
    if isinstance(cfg, EmailNotifier):
        from shortwatch.alerts.notifiers.email import Email

        return Email(cfg)
    if isinstance(cfg, SlackNotifier):
        from shortwatch.alerts.notifiers.slack import Slack

        return Slack(cfg)
    if isinstance(cfg, WebhookNotifier):
        from shortwatch.alerts.notifiers.webhook import Webhook

        return Webhook(cfg)
    if isinstance(cfg, MqttNotifier):
        from shortwatch.alerts.notifiers.mqtt import Mqtt

        return Mqtt(cfg, station, state_dir)
    if isinstance(cfg, AlertmanagerNotifier):
        from shortwatch.alerts.notifiers.alertmanager import Alertmanager

        return Alertmanager(cfg)
    raise ValueError(f"no notifier for {type(cfg).__name__}")
