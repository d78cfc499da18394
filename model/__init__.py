"""The purchase model: its features, the ground truth it learns, training and the saved artifact."""
