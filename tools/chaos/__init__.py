"""The fault harness behind `make chaos` (`python -m tools.chaos`): private servers, load, faults and the verdict.

The integration tests import the private servers and the TCP proxy from here too.
"""
