"""Stackyard engines."""
