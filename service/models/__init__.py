"""The models the service scores with: loading them from MODEL_URI and SHADOW_MODEL_URI, watching
for new versions, swapping them in between batches, and publishing the shadow's outputs."""
