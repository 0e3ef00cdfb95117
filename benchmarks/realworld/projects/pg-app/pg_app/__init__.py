"""A status service for a PostgreSQL-backed application."""
