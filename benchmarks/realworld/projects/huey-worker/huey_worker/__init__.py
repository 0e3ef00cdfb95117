"""Background jobs run by a huey consumer, queued in SQLite."""
