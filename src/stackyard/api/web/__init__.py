"""The web console: server-rendered pages under ``/ui``, served by the API server."""
