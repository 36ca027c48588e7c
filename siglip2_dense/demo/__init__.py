"""The demo world: the small SigLIP2 trained on the synthetic scenes (``assets/demo-siglip2``),
its tokenizer, prompts, losses, training recipe, held-out evaluation and example scenes.

Import rule: may import every wing (it trains with ``training``); nothing in the library imports it.
"""
