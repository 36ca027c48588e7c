"""The vision towers: SigLIP / SigLIP2 (FixRes and NaFlex) and timm ViTs, their preprocessing,
and :class:`DenseFeatures`, the one thing heads read.

Import rule: may import the top-level shared modules (errors, files, devices, towers, image input);
never ``training``, ``text``, ``openvocab`` or ``evaluation``.
"""
