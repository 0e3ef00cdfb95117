from __future__ import annotations

import os

from huey import SqliteHuey

huey = SqliteHuey("corpus-jobs", filename=os.environ.get("HUEY_DB", "/data/huey.db"))


@huey.task()
def invoice_total(lines: list[tuple[int, int]]) -> int:
    """Quantity times unit price, summed: the kind of job a web request hands off."""
    return sum(quantity * price for quantity, price in lines)
