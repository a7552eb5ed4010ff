"""The build's Docker API: a filtering proxy of the Docker Engine API, one socket per build.

``rules.py`` decides what a request of a build may do (plain data in and out); the
server (``server.py``) carries it out between the build container's socket and the
engine. Builds and releases open one scope per run through ``BuildProxy.open``.
"""
