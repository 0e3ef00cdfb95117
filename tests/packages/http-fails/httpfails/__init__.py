"""Serves files; has no /health."""
