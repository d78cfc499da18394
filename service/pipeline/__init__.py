"""The prediction pipeline: poll a batch through the delivery, validate it, look up features, predict, hand the outputs over."""
