from __future__ import annotations

from setuptools_grocker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
