"""Caption tokenizers: loading one without surprises, training a small one, encoding.

Two kinds of tokenizer feed the text branch:

* a pre-trained one (`bert-base-uncased` for the paper's configuration), read from a
  local directory or from the Hugging Face cache. Nothing is downloaded at run time
  unless asked for, and a tokenizer that loaded "successfully" but is nearly empty
  (what transformers returns for some offline misses) is rejected;
* a lowercase BERT-style WordPiece trained on the training captions (the `tiny`
  variant), whose special tokens take ids 0..4 in `SPECIAL_TOKENS` order.

Encoded captions are fixed-length int32 arrays: `[CLS] tokens [SEP]` then `[PAD]`.
"""
import collections
import os
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
import transformers

from vlsa_jax.data import wordpiece

# Special tokens in id order for trained tokenizers: [PAD]=0, [CLS]=1, [SEP]=2, [MASK]=3,
# [UNK]=4, so the tiny config's special_token_ids (0, 1, 2, 3) and mask_token_id 3 hold.
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")

# Below this many tokens a loaded tokenizer is a failed load, not a real vocabulary:
# transformers can return a tokenizer holding only its special tokens when the
# vocabulary files are missing.
_MIN_VOCAB_SIZE = 100

# Values huggingface_hub reads as true for its boolean environment variables.
_TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})


class TokenizerError(ValueError):
    """A tokenizer cannot be loaded or trained, or does not fit the text config."""


def _offline() -> bool:
    """Whether the environment forbids Hub downloads.

    Read at call time: huggingface_hub reads these variables once, at import.
    """
    return any(os.environ.get(name, "").upper() in _TRUE_VALUES
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _how_to_get_a_local_copy(name: str) -> str:
    """The error-message advice for making hub tokenizer `name` available offline."""
    return (
        f"Point the tokenizer at a local directory holding {name!r} (its tokenizer.json or "
        f"vocab.txt), e.g. --config.text.tokenizer=/path/to/{name}; on a machine with "
        f"internet, `huggingface-cli download {name} --local-dir /path/to/{name}` makes one."
    )


def _check_not_empty(tokenizer, source: str):
    """Returns `tokenizer`, or raises TokenizerError if its vocabulary is nearly empty."""
    if len(tokenizer) < _MIN_VOCAB_SIZE:
        raise TokenizerError(
            f"The tokenizer loaded from {source!r} has only {len(tokenizer)} tokens (fewer "
            f"than {_MIN_VOCAB_SIZE}): its vocabulary files are missing or incomplete.")
    return tokenizer


def _load_directory(directory: str):
    """Loads a tokenizer saved in `directory` (tokenizer.json, else a BERT vocab.txt)."""
    try:
        if os.path.isfile(os.path.join(directory, "tokenizer.json")):
            # AutoTokenizer picks the class named by tokenizer_config.json / config.json:
            # bert-base-uncased's special tokens are its class's defaults, not saved files.
            return transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
        if os.path.isfile(os.path.join(directory, "vocab.txt")):
            # AutoTokenizer cannot build a fast tokenizer from a bare vocab.txt; the BERT
            # class can, and still reads tokenizer_config.json (do_lower_case) when present.
            return transformers.BertTokenizerFast.from_pretrained(
                directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TokenizerError(f"Cannot load the tokenizer in {directory!r}: {err}") from err
    raise TokenizerError(
        f"{directory!r} holds neither tokenizer.json nor vocab.txt; it is not a tokenizer "
        "directory.")


def _load_hub_name(name: str, allow_download: bool):
    """Loads hub tokenizer `name` from the local cache, downloading only if allowed."""
    try:
        # local_files_only first: a plain from_pretrained without network retries for
        # minutes before failing.
        return transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as err:
        cache_error = err
    if not allow_download or _offline():
        reason = ("HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set" if allow_download
                  else "downloads are off (allow_download=False)")
        raise TokenizerError(
            f"Tokenizer {name!r} is not in the local Hugging Face cache and {reason}. "
            f"{_how_to_get_a_local_copy(name)}") from cache_error
    try:
        return transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise TokenizerError(
            f"Cannot download tokenizer {name!r}: {err}. {_how_to_get_a_local_copy(name)}"
        ) from err


def load_tokenizer(name_or_path: str | os.PathLike, allow_download: bool = False):
    """Loads a tokenizer from a local directory, or a Hugging Face Hub name.

    Args:
      name_or_path: a directory holding tokenizer.json (as `save_pretrained` writes it)
        or a BERT vocab.txt; or a Hub name such as 'bert-base-uncased', resolved from
        the local Hugging Face cache.
      allow_download: whether a Hub name missing from the cache may be downloaded.
        Ignored (no download) when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set.

    Returns:
      A transformers `PreTrainedTokenizerBase`.

    Raises:
      TokenizerError: the tokenizer cannot be found or loaded without a download that
        is not allowed, or its vocabulary is nearly empty. The message says how to point
        at a local copy.
    """
    name = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(name):
        return _check_not_empty(_load_directory(name), name)
    if os.path.exists(name):
        raise TokenizerError(f"{name!r} is a file; expected a tokenizer directory or a Hub name.")
    if os.path.isabs(name) or name.startswith("."):
        # Clearly meant as a path; as a Hub name it would only fail with a confusing error.
        raise TokenizerError(f"Tokenizer directory {name!r} does not exist.")
    return _check_not_empty(_load_hub_name(name, allow_download), name)


def train_wordpiece(captions: Iterable[str], vocab_size: int, output_dir: str | os.PathLike):
    """Trains a lowercase BERT-style WordPiece tokenizer on `captions` and saves it.

    The special tokens take ids 0..4 in `SPECIAL_TOKENS` order, the learnt pieces the
    next ids in learning order (`wordpiece.learn_vocabulary`): the same captions give the
    same ids on every run. `vocab_size` is an upper bound: a small corpus may not have
    that many tokens to learn.

    Args:
      captions: the training captions.
      vocab_size: the largest vocabulary to learn, special tokens included.
      output_dir: where `save_pretrained` writes the tokenizer (created if missing).

    Returns:
      The tokenizer as reloaded from `output_dir` by `load_tokenizer`.

    Raises:
      ValueError: `vocab_size` is below the smallest vocabulary `load_tokenizer` accepts.
      TokenizerError: the captions gave too small a vocabulary.
    """
    if vocab_size < _MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} is below the minimum of {_MIN_VOCAB_SIZE}.")
    normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    word_counts = collections.Counter(
        word for caption in captions
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)))
    learnt = wordpiece.learn_vocabulary(word_counts, vocab_size - len(SPECIAL_TOKENS))
    tokens = [*SPECIAL_TOKENS, *(t for t in learnt if t not in SPECIAL_TOKENS)]
    if len(tokens) > vocab_size:
        raise TokenizerError(
            f"The captions' characters alone need {len(tokens)} tokens, more than "
            f"vocab_size={vocab_size}: raise it, or use a pre-trained tokenizer.")
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(
        {token: i for i, token in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.decoder = tokenizers.decoders.WordPiece()
    if tok.get_vocab_size() < _MIN_VOCAB_SIZE:
        raise TokenizerError(
            f"The captions gave a vocabulary of only {tok.get_vocab_size()} tokens (at least "
            f"{_MIN_VOCAB_SIZE} needed): train on more captions, or use a pre-trained tokenizer.")
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", unk_token="[UNK]")
    wrapped.save_pretrained(os.fspath(output_dir))
    return load_tokenizer(output_dir)


def special_token_ids(tokenizer) -> dict[str, int]:
    """Returns the ids of the special tokens the text branch uses.

    Args:
      tokenizer: a transformers tokenizer.

    Returns:
      {'pad': id, 'cls': id, 'sep': id, 'mask': id, 'unk': id}.

    Raises:
      TokenizerError: the tokenizer lacks one of them.
    """
    ids = {role: getattr(tokenizer, f"{role}_token_id")
           for role in ("pad", "cls", "sep", "mask", "unk")}
    missing = sorted(role for role, token_id in ids.items() if token_id is None)
    if missing:
        raise TokenizerError(f"The tokenizer has no {', '.join(missing)} token.")
    return ids


def encode_captions(tokenizer, captions: Sequence[str],
                    max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Encodes captions as fixed-length `[CLS] tokens [SEP] [PAD]...` id rows.

    Longer captions are truncated so that `[SEP]` stays the last token; an empty caption
    gives `[CLS] [SEP]`.

    Args:
      tokenizer: a transformers tokenizer with a pad token whose template adds [CLS]/[SEP].
      captions: N captions.
      max_len: the row length, at least 2 (for [CLS] and [SEP]).

    Returns:
      ids: int32 [N, max_len] token ids.
      mask: int32 [N, max_len], 1 on real tokens ([CLS] and [SEP] included), 0 on padding.

    Raises:
      ValueError: `max_len` is below 2.
    """
    if max_len < 2:
        raise ValueError(f"max_len={max_len} leaves no room for [CLS] and [SEP].")
    if not captions:
        empty = np.zeros((0, max_len), np.int32)
        return empty, empty.copy()
    encoded = tokenizer(
        list(captions), truncation=True, max_length=max_len, padding="max_length",
        # Right padding whatever the tokenizer's default: [CLS] sits at position 0.
        padding_side="right", return_attention_mask=True, return_tensors="np")
    return (encoded["input_ids"].astype(np.int32), encoded["attention_mask"].astype(np.int32))


def check_compatible(tokenizer, text_config) -> None:
    """Checks that `tokenizer` fits the model's text config.

    Args:
      tokenizer: a transformers tokenizer.
      text_config: the config's `text` section (vocab_size, mask_token_id,
        special_token_ids).

    Raises:
      TokenizerError: naming each config field the tokenizer contradicts.
    """
    ids = special_token_ids(tokenizer)
    problems = []
    if len(tokenizer) > text_config.vocab_size:
        problems.append(
            f"text.vocab_size={text_config.vocab_size} is smaller than the tokenizer's "
            f"{len(tokenizer)} tokens")
    if ids["mask"] != text_config.mask_token_id:
        problems.append(
            f"text.mask_token_id={text_config.mask_token_id} but the tokenizer's [MASK] id "
            f"is {ids['mask']}")
    needed = {role: ids[role] for role in ("pad", "cls", "sep", "mask")}
    if not set(needed.values()) <= set(text_config.special_token_ids):
        problems.append(
            f"text.special_token_ids={tuple(text_config.special_token_ids)} does not hold "
            f"all of the tokenizer's special ids {needed}")
    if problems:
        raise TokenizerError("Tokenizer and config disagree: " + "; ".join(problems) + ".")
