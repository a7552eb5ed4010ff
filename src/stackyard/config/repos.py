"""How a stack's repository is written: a git URL, or else a local path.

The API validates repos with this (stacks.service); the CLI uses it to make local paths
absolute, without importing the services.
"""

from __future__ import annotations

import re

# scheme://… (https, ssh, git, file) or scp-like user@host:path.
URL_FORM = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[^/\s]+@[^:\s]+:)")
