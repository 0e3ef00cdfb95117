"""Example application: an HTTP server and a console script."""
__version__ = "0.3.0"
