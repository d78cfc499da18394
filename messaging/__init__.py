"""Topic names and creation, shared by every program."""
