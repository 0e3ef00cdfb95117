from __future__ import annotations

import sys

from huey_worker.tasks import invoice_total


def main() -> int:
    result = invoice_total([(2, 150), (1, 200)])
    total = result.get(blocking=True, timeout=30)
    print(f"invoice total {total}")
    return 0 if total == 500 else 1


if __name__ == "__main__":
    sys.exit(main())
