"""Webhook notifications in distribution's format, through a durable queue in the metadata
database. See docs/operations.md, "Webhooks"."""

from cargobay.notifications.notifier import NOTIFIER_KEY, Notifier, setup_notifications, stats

__all__ = ["NOTIFIER_KEY", "Notifier", "setup_notifications", "stats"]
