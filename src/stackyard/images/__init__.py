"""Stackyard images."""
