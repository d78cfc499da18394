"""What the service tells its operators: counters and histograms, Prometheus metrics, health, lag and the HTTP endpoints."""
