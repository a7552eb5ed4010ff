"""Stackyard: self-hosted push-to-deploy that builds an image once and promotes its digest."""

__version__ = "0.1.0"
