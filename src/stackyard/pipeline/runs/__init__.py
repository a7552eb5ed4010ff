"""Pipeline runs: build once, then gate, release and deploy each stage in order.

``service`` is what the API and the triggers call, ``runner`` drives one run through the
actions that the pure step planner in ``plan`` chooses, and ``records`` reads and writes
the run rows and their steps. Runs of one stack build one at a time; each stage takes one
run at a time; a newer run supersedes an older one that has not reached the stage.
"""

from stackyard.pipeline.runs.records import RunView, StepView
from stackyard.pipeline.runs.service import PipelineService
from stackyard.statuses import RUN_ACTIVE as ACTIVE
from stackyard.statuses import RUN_DONE as TERMINAL

__all__ = ["ACTIVE", "TERMINAL", "PipelineService", "RunView", "StepView"]
