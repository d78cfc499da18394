"""What every program shares at run time: logging set-up and graceful shutdown on signals."""
