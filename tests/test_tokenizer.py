"""Tokenizer loading, WordPiece training, caption encoding and config checks (all offline)."""
import time

import huggingface_hub
import ml_collections
import numpy as np
import pytest

from vlsa_jax.data import tokenizer as tokenizer_lib

MAX_LEN = 12
_WORDS = [
    "a", "the", "dog", "cat", "man", "woman", "child", "bird", "horse", "crowd", "band",
    "singer", "drummer", "runs", "jumps", "plays", "sings", "laughs", "talks", "barks",
    "drives", "rides", "guitar", "piano", "drum", "car", "bike", "ball", "water", "park",
    "street", "beach", "kitchen", "stage", "loudly", "quietly", "slowly", "quickly", "red",
    "blue", "green",
]


def _captions(count=50, seed=0):
    """`count` short captions drawn from a fixed word list."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=rng.integers(4, 10))) for _ in range(count)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(tokenizer, directory) of a WordPiece trained on the generated captions."""
    directory = tmp_path_factory.mktemp("wordpiece")
    return tokenizer_lib.train_wordpiece(_captions(), 512, directory), directory


def _text_config(**overrides):
    """The tiny variant's text config, with `overrides`."""
    config = ml_collections.ConfigDict({
        "tokenizer": "train", "max_len": MAX_LEN, "vocab_size": 512, "mask_token_id": 3,
        "special_token_ids": (0, 1, 2, 3)})
    config.update(overrides)
    return config


def _write_vocab(directory, tokens):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(f"{token}\n" for token in tokens))
    return directory


def _bert_tokens():
    """A BERT-layout vocabulary: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103."""
    return (["[PAD]"] + [f"[unused{i}]" for i in range(99)]
            + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(_WORDS)))


def test_trained_special_ids_follow_special_tokens_order(trained):
    tok, _ = trained
    assert tokenizer_lib.special_token_ids(tok) == {
        "pad": 0, "cls": 1, "sep": 2, "mask": 3, "unk": 4}
    assert tok.convert_ids_to_tokens(list(range(5))) == list(tokenizer_lib.SPECIAL_TOKENS)


def test_train_stays_within_target_vocab_size(trained, tmp_path):
    tok, _ = trained
    # 50 captions cannot fill 512 tokens; the target is an upper bound.
    assert len(tok) <= 512
    small = tokenizer_lib.train_wordpiece(_captions(), 120, tmp_path)
    assert 100 <= len(small) <= 120
    assert tokenizer_lib.special_token_ids(small)["mask"] == 3


def test_training_twice_gives_the_same_ids(trained, tmp_path):
    tokenizer, _ = trained
    again = tokenizer_lib.train_wordpiece(_captions(), 512, tmp_path)
    assert again.get_vocab() == tokenizer.get_vocab()
    captions = _captions(count=5, seed=1)
    assert again(captions)["input_ids"] == tokenizer(captions)["input_ids"]


def test_train_rejects_too_small_vocabularies(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        tokenizer_lib.train_wordpiece(_captions(), 50, tmp_path / "small_target")
    with pytest.raises(tokenizer_lib.TokenizerError, match="more captions"):
        tokenizer_lib.train_wordpiece(["a dog"], 512, tmp_path / "few_captions")
    # 58 letters, each word-initial and '##'-continued: 116 pieces before any merge.
    letters = "abcdefghijklmnopqrstuvwxyz" + "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"[:32]
    words = [letters[i:] + letters[:i] for i in range(len(letters))]
    with pytest.raises(tokenizer_lib.TokenizerError, match="characters alone need"):
        tokenizer_lib.train_wordpiece(words, 100, tmp_path / "large_alphabet")


def test_saved_tokenizer_reloads_identically(trained):
    tok, directory = trained
    assert (directory / "tokenizer.json").is_file()
    reloaded = tokenizer_lib.load_tokenizer(str(directory))
    assert reloaded.get_vocab() == tok.get_vocab()
    captions = _captions(5, seed=1)
    for got, want in zip(tokenizer_lib.encode_captions(reloaded, captions, MAX_LEN),
                         tokenizer_lib.encode_captions(tok, captions, MAX_LEN)):
        np.testing.assert_array_equal(got, want)


def test_encode_shapes_padding_and_mask(trained):
    tok, _ = trained
    ids, mask = tokenizer_lib.encode_captions(tok, ["a dog runs", "the man plays guitar"], MAX_LEN)
    assert ids.shape == mask.shape == (2, MAX_LEN)
    assert ids.dtype == mask.dtype == np.int32
    assert tok.convert_ids_to_tokens(ids[0, :5].tolist()) == [
        "[CLS]", "a", "dog", "runs", "[SEP]"]
    np.testing.assert_array_equal(ids[0, 5:], 0)
    np.testing.assert_array_equal(mask, (np.arange(MAX_LEN) < [[5], [6]]).astype(np.int32))


def test_long_caption_is_truncated_with_sep_last(trained):
    tok, _ = trained
    caption = " ".join(_WORDS * 60)[:10_000]
    assert len(caption) == 10_000
    start = time.perf_counter()
    ids, mask = tokenizer_lib.encode_captions(tok, [caption], MAX_LEN)
    assert time.perf_counter() - start < 2.0
    assert ids.shape == (1, MAX_LEN)
    assert ids[0, 0] == 1 and ids[0, -1] == 2
    np.testing.assert_array_equal(mask, 1)


def test_empty_captions(trained):
    tok, _ = trained
    ids, mask = tokenizer_lib.encode_captions(tok, [""], MAX_LEN)
    np.testing.assert_array_equal(ids[0], [1, 2] + [0] * (MAX_LEN - 2))
    np.testing.assert_array_equal(mask[0], [1, 1] + [0] * (MAX_LEN - 2))
    ids, mask = tokenizer_lib.encode_captions(tok, [], MAX_LEN)
    assert ids.shape == mask.shape == (0, MAX_LEN)


def test_non_ascii_captions(trained):
    tok, _ = trained
    ids, mask = tokenizer_lib.encode_captions(
        tok, ["Thé DÖG rûns", "the dog runs", "狗在跑"], MAX_LEN)
    # BertNormalizer lowercases and strips accents.
    np.testing.assert_array_equal(ids[0], ids[1])
    # Chinese characters are split one per token; unseen ones become [UNK].
    assert tok.convert_ids_to_tokens(ids[2, :5].tolist()) == [
        "[CLS]", "[UNK]", "[UNK]", "[UNK]", "[SEP]"]
    assert mask[2].sum() == 5


def test_load_directory_with_only_vocab_txt(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(_WORDS)) + [
        f"word{i}" for i in range(100)]
    directory = _write_vocab(tmp_path / "bert_vocab", tokens)
    tok = tokenizer_lib.load_tokenizer(directory)
    assert len(tok) == len(tokens)
    assert tokenizer_lib.special_token_ids(tok) == {
        "pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    ids, _ = tokenizer_lib.encode_captions(tok, ["The DOG runs"], MAX_LEN)
    assert ids[0, :5].tolist() == [2, tokens.index("the"), tokens.index("dog"),
                                   tokens.index("runs"), 3]


def test_near_empty_vocabulary_is_rejected(tmp_path):
    directory = _write_vocab(tmp_path / "five", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    with pytest.raises(tokenizer_lib.TokenizerError, match="only 5 tokens"):
        tokenizer_lib.load_tokenizer(directory)


def test_bad_paths_are_rejected(tmp_path):
    with pytest.raises(tokenizer_lib.TokenizerError, match="does not exist"):
        tokenizer_lib.load_tokenizer(tmp_path / "missing")
    with pytest.raises(tokenizer_lib.TokenizerError, match="neither tokenizer.json nor vocab.txt"):
        tokenizer_lib.load_tokenizer(tmp_path)


@pytest.mark.parametrize("allow_download", [False, True])
def test_offline_hub_name_fails_fast(tmp_path, monkeypatch, allow_download):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # huggingface_hub reads HF_HOME once, at import; the cache it searches must be empty too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(tokenizer_lib.TokenizerError, match="local directory") as info:
        tokenizer_lib.load_tokenizer("bert-base-uncased", allow_download=allow_download)
    assert time.perf_counter() - start < 10.0
    assert "--config.text.tokenizer=" in str(info.value)
    assert ("HF_HUB_OFFLINE" in str(info.value)) == allow_download


def test_hub_name_resolves_from_the_local_cache(tmp_path, monkeypatch):
    tok = tokenizer_lib.load_tokenizer(_write_vocab(tmp_path / "bert", _bert_tokens()))
    # The layout huggingface_hub gives a downloaded repo: refs/main names the snapshot,
    # which holds the repo's files (config.json tells AutoTokenizer the model type).
    repo = tmp_path / "hub" / "models--example--tiny-bert"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    tok.save_pretrained(repo / "snapshots" / commit)
    (repo / "snapshots" / commit / "config.json").write_text('{"model_type": "bert"}')
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = tokenizer_lib.load_tokenizer("example/tiny-bert")
    assert cached.get_vocab() == tok.get_vocab()
    assert tokenizer_lib.special_token_ids(cached)["mask"] == 103


def test_uncached_hub_name_is_not_downloaded_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(tokenizer_lib.TokenizerError, match="allow_download=False"):
        tokenizer_lib.load_tokenizer("bert-base-uncased")
    assert time.perf_counter() - start < 10.0


def test_check_compatible_accepts_matching_config(trained):
    tokenizer_lib.check_compatible(trained[0], _text_config())


@pytest.mark.parametrize("overrides, field", [
    ({"vocab_size": 64}, "text.vocab_size"),
    ({"mask_token_id": 103}, "text.mask_token_id"),
    ({"special_token_ids": (0, 101, 102, 3)}, "text.special_token_ids"),
])
def test_check_compatible_names_the_field(trained, overrides, field):
    with pytest.raises(tokenizer_lib.TokenizerError, match=field.replace(".", r"\.")) as info:
        tokenizer_lib.check_compatible(trained[0], _text_config(**overrides))
    # Only the field that disagrees is blamed.
    blamed = [name for name in ("text.vocab_size", "text.mask_token_id", "text.special_token_ids")
              if name in str(info.value)]
    assert blamed == [field]


def test_check_compatible_against_bert_ids(tmp_path):
    tok = tokenizer_lib.load_tokenizer(_write_vocab(tmp_path / "bert", _bert_tokens()))
    tokenizer_lib.check_compatible(tok, _text_config(
        vocab_size=30522, mask_token_id=103, special_token_ids=(0, 101, 102, 103)))
    with pytest.raises(tokenizer_lib.TokenizerError, match=r"text\.mask_token_id"):
        tokenizer_lib.check_compatible(tok, _text_config(vocab_size=30522))
