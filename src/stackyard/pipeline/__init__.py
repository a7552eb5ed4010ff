"""Stackyard pipeline."""
