"""What figures say about the machine they came from: the processor's name.

Kept apart from `report` (which imports torch and scikit-learn) so that a benchmark on a machine
without the trainer's extras, a lent GPU machine say, names its CPU the same way.
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name, for figures that say which CPU they came from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
