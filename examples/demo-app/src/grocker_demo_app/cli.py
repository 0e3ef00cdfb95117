"""``demo-app``: prints the greeting, or runs a tiny worker loop."""
from __future__ import annotations

import os
import sys
import time

from grocker_demo_lib import greet
from packaging.version import Version

from grocker_demo_app import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["work"]:
        for i in range(int(os.environ.get("WORK_ITEMS", "3"))):
            print(f"worker: item {i}", flush=True)
            time.sleep(0.1)
        return 0
    print(f"demo-app {Version(__version__)}: {greet(os.environ.get('GREETING', 'Hello'))}")
    return 0
