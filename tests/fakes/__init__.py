"""In-memory stand-ins behind the same interfaces as Kafka and MySQL, for unit tests."""
