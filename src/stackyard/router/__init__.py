"""Stackyard router."""
