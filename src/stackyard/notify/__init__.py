"""Notifications: what a stack's people hear without watching.

``events.py`` names the events and builds each one's notice (pure); ``outbox.py`` writes a
notice and its deliveries in the transaction of the change that caused it;
``channels.py`` keeps each stack's channels, their secrets sealed; ``delivery.py`` is the
worker that sends, retries with back-off (``retry.py``) and records every attempt;
``service.py`` is what the API calls.
"""
