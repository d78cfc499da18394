"""What producer.py and consumer.py do and show in a terminal."""
