"""Developer tools run from the checkout: the benchmark, the fault harness and the demo."""
