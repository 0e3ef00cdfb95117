"""Example library: tells which libyaml it was built against."""
from grocker_demo_lib._yamlver import libyaml_version

__all__ = ["libyaml_version", "greet"]


def greet(name: str) -> str:
    return f"Hello, {name}! (libyaml {libyaml_version()})"
