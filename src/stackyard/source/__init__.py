"""Stackyard source."""
