"""The text tower: :class:`TextEncoder`, prompt templates and class-name files, the on-disk
embedding cache and the checkpoint-file fingerprints it is keyed by.

Import rule: may import the top-level shared modules; never ``training`` or ``backbone``.
"""
