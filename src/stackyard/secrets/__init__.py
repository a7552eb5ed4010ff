"""Stackyard secrets."""
