"""Stackyard secrets: the SecretStore seam (store.py) with its SQL and in-memory adapters,
encryption at rest (vault.py), masking in logs (masking.py), secret files (files.py) and
env file templates (envfile.py).
"""
