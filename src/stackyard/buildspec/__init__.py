"""The buildspec runner: runs a CodeBuild-style build spec (version 0.2) locally.

Builds, releases and ``stackyard buildspec run`` call ``runner.run_buildspec``.
"""
