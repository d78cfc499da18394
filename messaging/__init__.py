"""Kafka plumbing shared by the producer, the service and the consumer."""
