"""The fault harness behind `make chaos` (scripts/chaos.py): private servers, load, faults and the verdict.

A regular package, with this file, unlike scripts/bench/: scripts/chaos.py sits beside it, and
Python prefers a package with an `__init__.py` to a module of the same name, but a module to a
namespace package. The tests import the private servers from here too (pytest puts scripts/ on
the path, as mypy and ruff already look there).
"""
