"""Stackyard deploy."""
