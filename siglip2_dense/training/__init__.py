"""Training a head (and optionally the tower): the loop (``engine``), optimiser and schedules,
resumable checkpoints and run folders, the frozen-feature cache, synced BatchNorm and validation.

Import rule: may import every other wing; nothing but the tools and the demo imports it.
"""
