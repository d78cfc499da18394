"""The floor that the offline store, the model and the service stand on: what a user's features
are, how they are turned into model inputs at an event's own time, and the contract that an
artifact carries so serving builds exactly the inputs its model was trained on."""
