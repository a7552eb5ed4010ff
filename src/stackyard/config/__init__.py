"""Stackyard config."""
