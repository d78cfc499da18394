"""The prediction service: consume events, join offline features, predict, publish, commit."""
