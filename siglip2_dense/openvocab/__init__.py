"""Open-vocabulary segmentation and zero-shot classification with SigLIP2's two towers:
:class:`OpenVocabSegmenter` and its :class:`OpenVocabResult`.

Import rule: may import ``backbone``, ``text``, ``heads`` and the top-level shared modules; never
``training``.
"""
