"""TextEncoder: parity with transformers, prompt rules, label rules and the embedding cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from siglip2_dense.errors import CheckpointError, RequestError
from siglip2_dense.text.checkpoint_files import file_fingerprint
from siglip2_dense.text.encoder import LabelEmbeddings, TextEncoder
from siglip2_dense.text.prompts import (
    canonicalize_text,
    parse_label_string,
    parse_labels,
    read_label_file,
    resolve_templates,
)

NON_ASCII_LABELS = ["猫", "кошка", "قطة", "बिल्ली", "ねこ", "γάτα"]


@pytest.fixture(scope="module")
def reference_model(tiny_naflex_text_dir: Path):
    from transformers import Siglip2Model

    return Siglip2Model.from_pretrained(tiny_naflex_text_dir).eval()


@pytest.fixture()
def encoder(tiny_naflex_text_dir: Path, tmp_path: Path) -> TextEncoder:
    return TextEncoder.from_pretrained(str(tiny_naflex_text_dir), cache_dir=tmp_path / "cache")


def reference_embeddings(model, directory: Path, prompts: list[str]) -> torch.Tensor:
    """transformers' ``get_text_features`` on the same padded ``input_ids``, L2-normalised."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    ids = tokenizer(prompts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return F.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1)


def count_forwards(encoder: TextEncoder) -> list[int]:
    calls = [0]
    encoder.text_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# --- prompt and label rules -------------------------------------------------------------------------

def test_canonicalize_text_follows_big_vision():
    assert canonicalize_text("  This_is  a PHOTO, of: T-Shirt. ") == "this is a photo of tshirt"
    assert canonicalize_text("Кошка!") == "кошка"
    assert canonicalize_text("猫。") == "猫。"  # only ASCII punctuation is removed
    assert canonicalize_text("...") == ""


def test_templates_single_and_imagenet80():
    assert resolve_templates("single") == ("This is a photo of {}.",)
    ensemble = resolve_templates("imagenet80")
    assert len(ensemble) == 80 and len(set(ensemble)) == 80
    assert all(t.count("{}") == 1 for t in ensemble)
    assert resolve_templates(["a {} here"]) == ("a {} here",)
    with pytest.raises(RequestError, match="imagenet80"):
        resolve_templates("imagenet81")
    with pytest.raises(RequestError, match="exactly one"):
        resolve_templates(["no slot"])


def test_label_rules():
    assert parse_labels(["Person, , People,", "car"]) == [("person", "people"), ("car",)]
    with pytest.raises(RequestError, match="empty list"):
        parse_labels([])
    with pytest.raises(RequestError, match=r"labels\[1\]"):
        parse_labels(["cat", " ... "])
    with pytest.raises(RequestError, match=r"labels\[0\] = 'cat'.*labels\[2\] = 'Cat\.'"):
        parse_labels(["cat", "dog", "Cat."])
    with pytest.raises(RequestError, match="not one string"):
        parse_labels("cat")


def test_label_string_and_packaged_vocabulary():
    assert parse_label_string(" person, people; car;; sky ;") == ["person, people", "car", "sky"]
    ade = read_label_file("ade20k_150_synonyms")
    assert len(ade) == 150 and ade[1] == "building, edifice" and ade[-1] == "flag"
    assert len(parse_labels(ade)) == 150
    config_copy = Path(__file__).resolve().parents[2] / "configs" / "zeroshot" / "ade20k_150_synonyms.txt"
    assert read_label_file(config_copy) == ade


# --- parity with transformers -----------------------------------------------------------------------

def test_embeddings_equal_transformers_text_features(encoder, reference_model, tiny_naflex_text_dir):
    texts = ["Cat", "sky!", "person people", "a_tree"]
    embeddings = encoder.encode(texts)
    prompts = [f"this is a photo of {t}" for t in ["cat", "sky", "person people", "a tree"]]
    expected = reference_embeddings(reference_model, tiny_naflex_text_dir, prompts)
    assert embeddings.shape == (4, 32)
    assert (embeddings - expected).abs().max() <= 1e-5
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(4), atol=1e-6)


def test_template_ensemble_is_mean_of_normalised_prompts(encoder, reference_model, tiny_naflex_text_dir):
    templates = ["a photo of the {}.", "a bad photo of a {}."]
    embedding = encoder.encode(["dog"], templates=templates)[0]
    per_prompt = reference_embeddings(reference_model, tiny_naflex_text_dir, ["a photo of the dog", "a bad photo of a dog"])
    expected = F.normalize(per_prompt.mean(dim=0), dim=-1)
    assert (embedding - expected).abs().max() <= 1e-5
    assert (embedding - encoder.encode(["dog"])[0]).abs().max() > 1e-3  # the templates matter


def test_logit_scale_and_bias_are_the_checkpoints(encoder, reference_model):
    assert encoder.logit_scale.item() == pytest.approx(reference_model.logit_scale.item(), abs=0)
    assert encoder.logit_bias.item() == pytest.approx(-2.0, abs=0)


def test_fixres_checkpoint_dispatches_to_siglip_text_model(tiny_fixres_dir, tmp_path):
    from conftest import build_tiny_tokenizer
    from transformers import SiglipModel, SiglipTextModel

    directory = tmp_path / "fixres-text"
    shutil.copytree(tiny_fixres_dir, directory)
    build_tiny_tokenizer(directory)
    encoder = TextEncoder.from_pretrained(str(directory), cache_dir=tmp_path / "cache")
    assert isinstance(encoder.text_model, SiglipTextModel)
    expected = reference_embeddings(SiglipModel.from_pretrained(directory).eval(), directory, ["this is a photo of car"])
    assert (encoder.encode(["car"]) - expected).abs().max() <= 1e-5


def test_vision_only_checkpoint_has_no_text_tower(tiny_fixres_vision_dir):
    with pytest.raises(CheckpointError, match="no text"):
        TextEncoder.from_pretrained(str(tiny_fixres_vision_dir))


# --- synonyms, long and non-ASCII labels ------------------------------------------------------------

def test_encode_labels_keeps_synonyms_and_takes_their_maximum(encoder):
    embedded = encoder.encode_labels(["person, people", "car"])
    assert isinstance(embedded, LabelEmbeddings)
    assert embedded.synonyms == ("person", "people", "car")
    assert embedded.label_index.tolist() == [0, 0, 1]
    assert torch.equal(embedded.embeddings, encoder.encode(["person", "people", "car"]))
    scores = torch.tensor([[0.1, 0.7, 0.3], [0.9, 0.2, 0.4]])
    assert torch.equal(embedded.max_over_synonyms(scores, dim=1), torch.tensor([[0.7, 0.3], [0.9, 0.4]]))


def test_long_labels_are_truncated_to_64_tokens(encoder):
    words = "cat dog sky tree wall road grass water " * 13  # 104 words, 507 characters
    long_a, long_b = words + "house", words + "mountain sea floor"
    assert len(long_a) >= 500
    ids = encoder.tokenize([f"this is a photo of {long_a}"])
    assert ids.shape == (1, 64)
    first, second = encoder.encode([long_a, long_b])
    assert torch.equal(first, second)  # they differ only past token 64
    assert not torch.equal(first, encoder.encode(["cat dog sky"])[0])


def test_non_ascii_labels_work(encoder):
    embedded = encoder.encode_labels(NON_ASCII_LABELS)
    assert embedded.synonyms == tuple(NON_ASCII_LABELS)
    assert embedded.embeddings.shape == (len(NON_ASCII_LABELS), 32)
    assert torch.isfinite(embedded.embeddings).all()
    assert torch.allclose(embedded.embeddings.norm(dim=-1), torch.ones(len(NON_ASCII_LABELS)), atol=1e-6)


def test_bad_requests_raise_request_error(encoder):
    with pytest.raises(RequestError, match="empty list"):
        encoder.encode_labels([])
    with pytest.raises(RequestError, match="duplicate label.*'car'.*'Car'"):
        encoder.encode_labels(["car", "sky", "Car"])
    with pytest.raises(RequestError, match=r"texts\[0\]"):
        encoder.encode(["!!"])


# --- the cache ----------------------------------------------------------------------------------------

def test_second_encode_runs_no_text_forward(encoder, tiny_naflex_text_dir, tmp_path):
    calls = count_forwards(encoder)
    first = encoder.encode_labels(["cat", "dog, puppy"], templates="imagenet80")
    assert calls[0] == 4  # 3 synonyms x 80 templates = 240 prompts in batches of 64
    again = encoder.encode_labels(["cat", "dog, puppy"], templates="imagenet80")
    assert calls[0] == 4 and again is first  # the label-list memo
    encoder.clear_memory()
    from_file = encoder.encode_labels(["cat", "dog, puppy"], templates="imagenet80")
    assert calls[0] == 4 and from_file is not first
    assert torch.equal(first.embeddings, from_file.embeddings)

    fresh = TextEncoder.from_pretrained(str(tiny_naflex_text_dir), cache_dir=tmp_path / "cache")
    fresh_calls = count_forwards(fresh)
    from_disk = fresh.encode_labels(["cat", "dog, puppy"], templates="imagenet80")
    assert fresh_calls[0] == 0
    assert torch.equal(from_disk.embeddings, first.embeddings)
    fresh.encode_labels(["cat", "dog, puppy"], templates="single")  # another template set: a miss
    assert fresh_calls[0] == 1

    files = list((tmp_path / "cache").rglob("*"))
    stored = [f for f in files if f.suffix == ".safetensors"]
    assert len(stored) == 2 and not [f for f in files if f.name.endswith(".tmp")]
    assert len({f.parent for f in stored}) == 1  # one namespace per checkpoint


def test_cache_is_keyed_by_the_weights(encoder, tiny_naflex_text_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    before = encoder.encode(["cat"])
    changed = tmp_path / "changed"
    shutil.copytree(tiny_naflex_text_dir, changed)
    state = load_file(str(changed / "model.safetensors"))
    state["text_model.head.bias"] = state["text_model.head.bias"] + 1.0
    save_file(state, str(changed / "model.safetensors"), metadata={"format": "pt"})
    assert file_fingerprint(changed / "model.safetensors") != file_fingerprint(tiny_naflex_text_dir / "model.safetensors")

    other = TextEncoder.from_pretrained(str(changed), cache_dir=tmp_path / "cache")
    calls = count_forwards(other)
    after = other.encode(["cat"])
    assert calls[0] == 1
    assert (after - before).abs().max() > 1e-3


def test_unreadable_cache_file_is_recomputed(encoder, tiny_naflex_text_dir, tmp_path):
    expected = encoder.encode(["sky"])
    (stored,) = list((tmp_path / "cache").rglob("*.safetensors"))
    stored.write_bytes(b"not a safetensors file")
    fresh = TextEncoder.from_pretrained(str(tiny_naflex_text_dir), cache_dir=tmp_path / "cache")
    calls = count_forwards(fresh)
    assert torch.equal(fresh.encode(["sky"]), expected)
    assert calls[0] == 1
    fresh.cache.clear_memory()
    assert torch.equal(fresh.encode(["sky"]), expected) and calls[0] == 1  # rewritten, read from disk
