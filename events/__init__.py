"""The wire format of the pipeline: input events, predictions and dead-letter headers, defined once."""
