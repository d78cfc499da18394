"""The benchmark behind `make benchmark` (`python -m tools.bench`): its scenarios, its load and the baselines it compares against."""
