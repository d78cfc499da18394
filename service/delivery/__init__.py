"""Delivery: the consumer's position and the outputs' way to Kafka, at least once or exactly once.

The only room that polls, seeks, pauses, rewinds or commits. `guarantee.py` is its interface.
"""
