"""Stackyard secrets: encryption at rest (vault.py) and env file templates (envfile.py).

Masking in logs lives with the log writer (buildspec/masking.py); the variable service
(pipeline/variables.py) stores and resolves secrets.
"""
