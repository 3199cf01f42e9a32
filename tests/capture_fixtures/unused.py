"""Imported by nothing the tests capture: it must not be shipped, nor its imports listed."""

import pandas  # noqa: F401
