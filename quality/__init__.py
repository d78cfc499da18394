"""The quality monitor (quality_monitor.py): labels served predictions with the purchases that followed
them, and measures each model version's live quality (docs/model-quality.md)."""
