"""A subpackage whose __init__ re-exports from a submodule (a relative import)."""

from .scaling import scale

__all__ = ["scale"]
