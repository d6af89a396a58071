"""Notifications: sinks configured once for the operator, deliveries in the background.

config.py reads the sinks (LOSSGATE_NOTIFICATIONS_FILE), payloads.py builds each sink's request,
delivery.py queues and sends them with retries, never on the operator's event loop.
"""

from lossgate.adapters.notify.config import NotificationSettings, SinkConfig, load_settings
from lossgate.adapters.notify.delivery import Notifications

__all__ = ["NotificationSettings", "Notifications", "SinkConfig", "load_settings"]
