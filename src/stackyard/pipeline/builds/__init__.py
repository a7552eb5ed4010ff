"""Builds: turn one commit of a stack into one image, stored in the registry by digest.

``service`` is what the API and pipeline runs call, ``runner`` the steps of one build,
``records`` the build rows.
"""

from stackyard.pipeline.builds.records import BuildView
from stackyard.pipeline.builds.runner import BuildFailure
from stackyard.pipeline.builds.service import BuildService
from stackyard.statuses import BUILD_DONE as TERMINAL

__all__ = ["TERMINAL", "BuildFailure", "BuildService", "BuildView"]
