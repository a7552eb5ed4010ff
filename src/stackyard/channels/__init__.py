"""Notification channels: the seam that delivers one message to Slack, Discord, a signed
webhook or an email address. ``base.py`` is the seam; the built-ins register under the
``stackyard.channels`` entry point group, like any plugin's would."""
