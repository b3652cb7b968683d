"""Rebuilds a Hugging Face `tokenizers.Tokenizer` from a GGUF file's tokenizer metadata.

A GGUF carries no tokenizer.json: llama.cpp's converter stores the vocabulary (`tokenizer.ggml.tokens`,
already spelled in GPT-2's byte-to-unicode alphabet for byte-level BPE), the merges, a type per token
(1 normal, 3 control, 4 user-defined, ...), the special token ids, and the *name* of the
pre-tokenizer (`tokenizer.ggml.pre`), whose regexes live in llama.cpp's source (llama-vocab.cpp).
PRE_TOKENIZERS below maps those names to the equivalent `tokenizers` pre-tokenizers; a name outside
the table is an error rather than a silent guess, because a wrong split regex changes token ids
without any other symptom.

Only `tokenizer.ggml.model == "gpt2"` (byte-level BPE: GPT-2, StarCoder, SmolLM, Llama 3, Qwen2,
Seed-Coder) is rebuilt; sentencepiece ("llama") and other vocabularies raise GGUFError.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import gguf
import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


class GGUFError(ValueError):
  """A GGUF file that cannot be imported; the message names the file and the offending item."""


# The split regexes as the models' own tokenizer.json files state them (llama.cpp rewrites the
# case-insensitive groups for its own regex engine; Oniguruma, used by `tokenizers`, takes them as is).
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SEED_CODER_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}"
                     r"| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(add_prefix_space: bool):
  """GPT-2's split regex followed by the byte-to-unicode mapping."""
  return pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)


def _digits_then_byte_level(add_prefix_space: bool):
  # llama.cpp's STARCODER/SMOLLM group: "\p{N}" first (every digit its own piece), then GPT-2's
  # regex; identical to these models' tokenizer.json (Digits(individual_digits) + ByteLevel).
  return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                  _byte_level(add_prefix_space)])


def _split_then_bytes(regex: str):
  def build(add_prefix_space: bool):
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=False)])
  return build


# `tokenizer.ggml.pre` -> (pre-tokenizer builder, ignore_merges). Groups as in llama.cpp's
# llama-vocab.cpp; ignore_merges mirrors its `tokenizer_ignore_merges` (Llama 3's tokenizer.json
# says the same: a piece that is itself in the vocabulary is emitted whole).
PRE_TOKENIZERS = {
    **{name: (_byte_level, False) for name in (
        "gpt-2", "phi-2", "roberta-bpe", "mpt", "olmo", "jais")},
    **{name: (_digits_then_byte_level, False) for name in (
        "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b")},
    **{name: (_split_then_bytes(_LLAMA3_SPLIT), True) for name in (
        "llama3", "llama-v3", "llama-bpe", "falcon3")},
    **{name: (_split_then_bytes(_LLAMA3_SPLIT), False) for name in ("dbrx", "smaug-bpe")},
    **{name: (_split_then_bytes(_QWEN2_SPLIT), False) for name in (
        "qwen2", "stablelm2", "megrez", "deepseek-r1-qwen")},
    "seed-coder": (_split_then_bytes(_SEED_CODER_SPLIT), False),
}


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
  """The rebuilt tokenizer plus what a sampler or chat server needs beside it.

  special_ids: every `tokenizer.ggml.<name>_token_id` in the file, keyed by <name>
  (e.g. {"bos": 1, "eos": 2, "unknown": 0, "padding": 2}).
  """

  tokenizer: Tokenizer
  chat_template: Optional[str]
  special_ids: dict
  add_bos: bool
  add_eos: bool
  pre_tokenizer: str

  @property
  def bos_id(self) -> Optional[int]:
    return self.special_ids.get("bos")

  @property
  def eos_id(self) -> Optional[int]:
    return self.special_ids.get("eos")

  @property
  def pad_id(self) -> Optional[int]:
    return self.special_ids.get("padding")


class _Reader(gguf.GGUFReader):
  """GGUFReader over a plain-ndarray view of its memory map.

  The reader slices its buffer once per metadata string (~100K for a 49K-token vocabulary plus
  merges); slicing an `np.memmap` runs Python-level hooks each time, a plain view of the same
  mapping does not: opening SmolLM2's GGUF drops from ~13 s to ~4 s on a loaded 2-core machine.
  The data stays file-backed either way.
  """

  @property
  def data(self):
    return self._data

  @data.setter
  def data(self, value):
    self.path = getattr(value, "filename", None)
    self._data = value.view(np.ndarray) if isinstance(value, np.memmap) else value


def reader_name(reader: gguf.GGUFReader) -> str:
  return str(getattr(reader, "path", None) or getattr(reader.data, "filename", None) or "<GGUF>")


def field(reader: gguf.GGUFReader, key: str, default=dataclasses.MISSING):
  """The decoded value of a metadata key (scalars as Python values, arrays as lists)."""
  f = reader.fields.get(key)
  if f is None:
    if default is dataclasses.MISSING:
      raise GGUFError(f"{reader_name(reader)}: required metadata key {key!r} is missing")
    return default
  return f.contents()


def tokenizer_info(reader: gguf.GGUFReader) -> TokenizerInfo:
  """Builds the tokenizer described by an open GGUF file's metadata."""
  name = reader_name(reader)
  model_type = field(reader, "tokenizer.ggml.model")
  if model_type != "gpt2":
    raise GGUFError(f"{name}: tokenizer.ggml.model={model_type!r} is not supported; only 'gpt2' "
                    "(byte-level BPE) vocabularies can be rebuilt from GGUF metadata")
  pre = field(reader, "tokenizer.ggml.pre", "default")
  if pre not in PRE_TOKENIZERS:
    raise GGUFError(f"{name}: tokenizer.ggml.pre={pre!r} has no known pre-tokenizer here; "
                    f"supported: {sorted(PRE_TOKENIZERS)}")
  build_pre, ignore_merges = PRE_TOKENIZERS[pre]

  tokens = list(field(reader, "tokenizer.ggml.tokens"))
  token_types = list(field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
  merges = field(reader, "tokenizer.ggml.merges", None)
  if merges is None:
    raise GGUFError(f"{name}: a byte-level BPE vocabulary needs tokenizer.ggml.merges, which is "
                    "missing")
  if len(token_types) != len(tokens):
    raise GGUFError(f"{name}: {len(token_types)} token types for {len(tokens)} tokens")
  vocab = {}
  for i, token in enumerate(tokens):
    vocab.setdefault(token, i)  # llama.cpp keeps the first id of a duplicated spelling, as here
  pairs = []
  for i, merge in enumerate(merges):
    parts = merge.split(" ")
    if len(parts) != 2:
      raise GGUFError(f"{name}: merge #{i} {merge!r} is not two space-separated tokens")
    pairs.append((parts[0], parts[1]))

  tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges))
  add_prefix_space = bool(field(reader, "tokenizer.ggml.add_space_prefix", False))
  tok.pre_tokenizer = build_pre(add_prefix_space)
  tok.decoder = decoders.ByteLevel()
  # Control tokens (<|im_start|>, <|endoftext|>, ...) and user-defined ones are matched whole in
  # raw text before pre-tokenization, as llama.cpp does; only control tokens are "special"
  # (dropped by decode(skip_special_tokens=True)).
  added = [AddedToken(t, special=ty == TOKEN_TYPE_CONTROL, normalized=False)
           for t, ty in zip(tokens, token_types)
           if ty in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)]
  tok.add_special_tokens([a for a in added if a.special])
  tok.add_tokens([a for a in added if not a.special])

  special_ids = {}
  for key in reader.fields:
    if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
      token_id = int(field(reader, key))
      if not 0 <= token_id < len(tokens):
        raise GGUFError(f"{name}: {key}={token_id} is outside the vocabulary of {len(tokens)}")
      special_ids[key[len("tokenizer.ggml."):-len("_token_id")]] = token_id
  add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", False))
  add_eos = bool(field(reader, "tokenizer.ggml.add_eos_token", False))
  template, special = "$A", []
  for flag, key in ((add_bos, "bos"), (add_eos, "eos")):
    if not flag:
      continue
    if key not in special_ids:
      raise GGUFError(f"{name}: tokenizer.ggml.add_{key}_token is set but {key}_token_id is missing")
    token = tokens[special_ids[key]]
    template = f"{token} {template}" if key == "bos" else f"{template} {token}"
    special.append((token, special_ids[key]))
  if special:
    tok.post_processor = processors.TemplateProcessing(
        single=template, pair=f"{template} {template.replace('$A', '$B')}", special_tokens=special)
  return TokenizerInfo(tokenizer=tok, chat_template=field(reader, "tokenizer.chat_template", None),
                       special_ids=special_ids, add_bos=add_bos, add_eos=add_eos, pre_tokenizer=pre)


def open_reader(path: str | os.PathLike) -> gguf.GGUFReader:
  """Opens a GGUF file, turning the reader's low-level failures into GGUFError naming the file."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise GGUFError(f"{path}: no such GGUF file")
  with open(path, "rb") as f:
    magic = f.read(4)
  if magic != b"GGUF":
    raise GGUFError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
  try:
    return _Reader(path)
  except (ValueError, IndexError, OverflowError, UnicodeDecodeError, KeyError) as e:
    raise GGUFError(f"{path}: corrupt or truncated GGUF file ({type(e).__name__}: {e}); "
                    f"size {os.path.getsize(path)} bytes") from e
