"""The one thing every job entry point does: run one ``factory`` CLI command and exit with its code.

``ray job submit ... -- python jobs/<stage>.py --config FILE key=value ...`` runs a script whose
directory (``jobs/``) is ``sys.path[0]``, so the repository root, the uploaded ``working_dir``,
is put first on the path here: the job runs the code it was submitted with, even where an older
``facefactory`` is installed in the cluster image (Ray's workers see the same copy through the
``PYTHONPATH`` that its ``working_dir`` sets).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_stage(command: str) -> None:
    """Run ``factory <command> <this process's arguments>`` and exit with its return code."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from factory.cli import main

    sys.exit(main([command, *sys.argv[1:]]))
