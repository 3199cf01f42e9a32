"""A constant the scoring function uses, in a module of its own."""

FACTOR = 2.0
