"""The offline feature store: purchase history in MySQL and the per-user features computed from it."""
