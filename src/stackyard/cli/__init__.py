"""Stackyard cli."""
