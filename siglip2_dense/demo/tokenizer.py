"""A small Gemma-style tokenizer over the synthetic world's vocabulary, as a transformers ``Siglip2Tokenizer``.

The demo model (:mod:`siglip2_dense.demo.model`) is trained from scratch, so it cannot use Gemma's
256k-token vocabulary; it gets a BPE over the words the synthetic world and the toolkit's prompts
can produce: every caption word (number words, the 16 class names and their plurals, "and", "an
empty room", the comma), "background", and every word of the single template and the 80 ImageNet
templates. The BPE is trained (``tokenizers``) until each of those words is one token, with and
without the word-start marker ``▁``; other words fall back to letters.

Why ``Siglip2Tokenizer``: for a checkpoint whose ``config.json`` says ``model_type: siglip2``,
``AutoTokenizer`` always builds that class (Gemma's conventions: lowercase, spaces become ``▁``, a
BPE with merges), whatever ``tokenizer_config.json`` names, so the demo tokenizer is one of those.
Its special tokens keep Gemma's ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<mask>``
4). Every text ends with ``<eos>``; padding is on the right, so with ``padding="max_length"`` the
last position, which the text tower pools, is ``<pad>`` for any shorter text, as in SigLIP.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from siglip2_dense.data.synthetic import CLASS_NAMES, NUMBER_WORDS, SHAPES
from siglip2_dense.demo.model import TEXT_LENGTH
from siglip2_dense.text.prompts import resolve_templates

PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN, MASK_TOKEN = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN, MASK_TOKEN)  # ids 0..4, as Gemma
WORD_START = "\u2581"  # "▁"
CAPTION_CONNECTIVES = ("and", ",", "an", "empty", "room")
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789,.'-"


def world_texts() -> list[str]:
    """Every text whose words make up the vocabulary: class names (singular and plural), caption
    words (the comma included), and all prompt templates (the ``{}`` left out)."""
    plurals = [name.replace(shape, f"{shape}s") for name in CLASS_NAMES for shape in SHAPES if name.endswith(shape)]
    templates = [t.replace("{}", " ") for t in (*resolve_templates("single"), *resolve_templates("imagenet80"))]
    return [*CLASS_NAMES, *plurals, *NUMBER_WORDS, *CAPTION_CONNECTIVES, *templates]


def _word_pieces(texts: Iterable[str]) -> list[str]:
    """Each word of ``texts`` lowercased, as it appears first in a text and after a space: ``w``, ``▁w``."""
    words = {word for text in texts for word in text.lower().split()}
    return sorted(words) + sorted(WORD_START + word for word in words)


def build_tokenizer(texts: Iterable[str] | None = None):
    """A ``Siglip2Tokenizer`` whose BPE makes each word of ``texts`` (default :func:`world_texts`) one token.

    Returns:
        transformers ``Siglip2Tokenizer`` (right padding, ``<eos>`` appended, no ``<bos>``).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Siglip2Tokenizer

    pieces = _word_pieces(world_texts() if texts is None else texts)
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN, fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # the pieces are words already
    trainer = trainers.BpeTrainer(
        vocab_size=100_000, min_frequency=1, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=[WORD_START, *ALPHABET], show_progress=False,
    )
    backend.train_from_iterator(pieces, trainer=trainer)
    vocab = backend.get_vocab()
    merges = [tuple(merge) for merge in _merges(backend)]
    return Siglip2Tokenizer(
        vocab=vocab, merges=merges, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN, mask_token=MASK_TOKEN, add_bos_token=False, add_eos_token=True,
        padding_side="right", truncation_side="right", model_max_length=TEXT_LENGTH,
    )


def _merges(backend) -> list[list[str]]:
    """The trained BPE's merges, in rank order (read from its JSON form)."""
    import json

    merges = json.loads(backend.to_str())["model"]["merges"]
    return [merge.split(" ") if isinstance(merge, str) else list(merge) for merge in merges]


def save_tokenizer(tokenizer, directory: str | Path) -> list[Path]:
    """Save ``tokenizer`` (from :func:`build_tokenizer`) into ``directory``; return the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [Path(name) for name in tokenizer.save_pretrained(str(directory))]
