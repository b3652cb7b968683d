"""Tokenizers behind one interface: the project's SentencePiece BPE and Hugging Face `tokenizer.json`.

    tok = tokenizer.load("spm:/path/tok.model")        # trained by data/train_tokenizer.py
    tok = tokenizer.load("hf:/path/tokenizer.json")     # real Seed-Coder / StarCoder-style vocabularies
    tok = tokenizer.load("gguf:/path/model.gguf")       # the vocabulary inside a GGUF ("gguf:smollm2")
    ids = tok.encode(text); text == tok.decode(ids)     # lossless for any text
    tok.bos_id, tok.fim_suffix_id, tok.file_sep_id, tok.special_ids["commit_msg"], ...

`encode` never produces special ids: text that happens to contain "<fim_prefix>" is tokenized as
text, so documents cannot inject control tokens; pipelines insert special ids themselves. `decode`
renders special ids as their piece strings (readable FIM/repo layouts in tests and logs).

Objects are picklable and load their model lazily on first use: a Grain worker process receives
the spec string only and loads the model itself.

SPECIAL_TOKENS is the one canonical list of reserved tokens (name -> piece). The SentencePiece model
reserves them at fixed ids 0..len-1 in this order; a foreign vocabulary maps those of them it has
(by piece string, or by its GGUF metadata for bos/eos/pad), the others are None.
"""

from __future__ import annotations

import abc
import io
import os
import pathlib
from typing import Iterable, Iterator, Optional, Sequence

# name -> piece. Order fixes the SentencePiece ids: pad=0, unk=1, bos=2, eos=3, then the rest.
SPECIAL_TOKENS: dict[str, str] = {
    "pad": "<pad>",
    "unk": "<unk>",
    "bos": "<s>",
    "eos": "</s>",
    # Fill-in-the-middle (SPM: <fim_suffix>S<fim_prefix>P<fim_middle>M; PSM: prefix first).
    "fim_prefix": "<fim_prefix>",
    "fim_middle": "<fim_middle>",
    "fim_suffix": "<fim_suffix>",
    "fim_pad": "<fim_pad>",
    # Repository-level documents: <repo_name>name<file_sep>path\ncontent<file_sep>...
    "repo_name": "<repo_name>",
    "file_sep": "<file_sep>",
    # Commit records (StarCoder's names): context before, message, change after.
    "commit_before": "<commit_before>",
    "commit_msg": "<commit_msg>",
    "commit_after": "<commit_after>",
    # Chat (ChatML delimiters plus one token per role).
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
}

# Other spellings of our special tokens in well-known Hugging Face vocabularies (StarCoder/SmolLM,
# Qwen2.5-Coder, Llama 3, Seed-Coder). The first piece found in the vocabulary wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "pad": ("<|pad|>", "<|finetune_right_pad_id|>", "[PAD]"),
    "unk": ("[UNK]",),
    "bos": ("<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>", "<[begin▁of▁sentence]>"),
    "eos": ("<|end_of_text|>", "<|endoftext|>", "<[end▁of▁sentence]>"),
    "fim_prefix": ("<|fim_prefix|>", "<[fim-prefix]>"),
    "fim_middle": ("<|fim_middle|>", "<[fim-middle]>"),
    "fim_suffix": ("<|fim_suffix|>", "<[fim-suffix]>"),
    "fim_pad": ("<|fim_pad|>",),
    "repo_name": ("<reponame>", "<|repo_name|>"),
    "file_sep": ("<|file_sep|>", "<filename>"),
}

SPM_META_SPACE = "\u2581"  # SentencePiece spells spaces with it, so a literal one needs bytes.


class TokenizerError(ValueError):
  """A tokenizer that cannot be loaded or trained; the message names the spec or path."""


class Tokenizer(abc.ABC):
  """The interface; subclasses implement `_load`, `_encode`, `_decode_plain` and the vocabulary."""

  spec: str

  def __init__(self, spec: str):
    self.spec = spec
    self._backend = None

  # Pickling sends the spec only: each worker loads its own model on first use.
  def __getstate__(self):
    state = dict(self.__dict__)
    state["_backend"] = None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __repr__(self):
    return f"{type(self).__name__}({self.spec!r})"

  @property
  def backend(self):
    if self._backend is None:
      self._backend = self._load()
    return self._backend

  @abc.abstractmethod
  def _load(self):
    """The backend object (loaded lazily, once per process)."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids, special tokens included."""

  @property
  @abc.abstractmethod
  def special_ids(self) -> dict[str, Optional[int]]:
    """Every name of SPECIAL_TOKENS -> its id in this vocabulary, or None where it has none."""

  @abc.abstractmethod
  def id_to_piece(self, token_id: int) -> str:
    """The vocabulary entry of one id."""

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, special-token strings inside it encoded as plain text."""

  @abc.abstractmethod
  def _decode_plain(self, ids: Sequence[int]) -> str:
    """Text of ids that contain no special ids."""

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; special ids appear as their piece strings."""
    special = self._special_set()
    out, run = [], []
    for i in ids:
      i = int(i)
      if i in special:
        if run:
          out.append(self._decode_plain(run))
          run = []
        out.append(self.id_to_piece(i))
      else:
        run.append(i)
    if run:
      out.append(self._decode_plain(run))
    return "".join(out)

  def _special_set(self) -> frozenset:
    cached = self.__dict__.get("_special_cache")
    if cached is None:
      cached = frozenset(i for i in self.special_ids.values() if i is not None)
      self.__dict__["_special_cache"] = cached
    return cached

  def _id(self, name: str) -> Optional[int]:
    return self.special_ids.get(name)

  bos_id = property(lambda self: self._id("bos"))
  eos_id = property(lambda self: self._id("eos"))
  pad_id = property(lambda self: self._id("pad"))
  unk_id = property(lambda self: self._id("unk"))
  fim_prefix_id = property(lambda self: self._id("fim_prefix"))
  fim_middle_id = property(lambda self: self._id("fim_middle"))
  fim_suffix_id = property(lambda self: self._id("fim_suffix"))
  fim_pad_id = property(lambda self: self._id("fim_pad"))
  repo_id = property(lambda self: self._id("repo_name"))
  file_sep_id = property(lambda self: self._id("file_sep"))
  commit_before_id = property(lambda self: self._id("commit_before"))
  commit_msg_id = property(lambda self: self._id("commit_msg"))
  commit_after_id = property(lambda self: self._id("commit_after"))
  im_start_id = property(lambda self: self._id("im_start"))
  im_end_id = property(lambda self: self._id("im_end"))
  system_id = property(lambda self: self._id("system"))
  user_id = property(lambda self: self._id("user"))
  assistant_id = property(lambda self: self._id("assistant"))

  def require(self, *names: str) -> tuple[int, ...]:
    """The ids of `names`; a clear error naming the tokenizer and the missing tokens otherwise."""
    ids = self.special_ids
    missing = [n for n in names if ids.get(n) is None]
    if missing:
      raise TokenizerError(f"tokenizer {self.spec!r} has no {', '.join(missing)} token(s) "
                           f"({', '.join(SPECIAL_TOKENS[n] for n in missing)})")
    return tuple(ids[n] for n in names)


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece BPE model trained by `train_sentencepiece` (spec "spm:PATH")."""

  def __init__(self, path: str | os.PathLike):
    path = str(path)
    # Cloud paths (gs://...) are checked and read through etils.epath (installed with orbax and
    # grain), which pods have credentials for; local paths need nothing beyond the filesystem.
    remote = "://" in path
    if not (_epath(path).exists() if remote else pathlib.Path(path).is_file()):
      raise TokenizerError(f"SentencePiece model not found: {path} (train one with "
                           "data/train_tokenizer.py)")
    super().__init__(f"spm:{path}")
    self.path = path

  def _load(self):
    import sentencepiece as spm
    if "://" in self.path:
      sp = spm.SentencePieceProcessor(model_proto=_epath(self.path).read_bytes())
    else:
      sp = spm.SentencePieceProcessor(model_file=self.path)
    for i, piece in enumerate(SPECIAL_TOKENS.values()):
      if sp.id_to_piece(i) != piece:
        raise TokenizerError(f"{self.path}: id {i} is {sp.id_to_piece(i)!r}, expected {piece!r}; "
                             "not a model trained by data/train_tokenizer.py")
    # A literal U+2581 would decode as a space: encode it through its byte-fallback pieces.
    meta_bytes = [sp.piece_to_id(f"<0x{b:02X}>") for b in SPM_META_SPACE.encode("utf-8")]
    return sp, meta_bytes

  @property
  def vocab_size(self) -> int:
    return self.backend[0].get_piece_size()

  @property
  def special_ids(self) -> dict[str, Optional[int]]:
    return {name: i for i, name in enumerate(SPECIAL_TOKENS)}

  def id_to_piece(self, token_id: int) -> str:
    return self.backend[0].id_to_piece(int(token_id))

  def encode(self, text: str) -> list[int]:
    sp, meta_bytes = self.backend
    if SPM_META_SPACE not in text:
      return sp.encode(text)
    ids = []
    for k, part in enumerate(text.split(SPM_META_SPACE)):
      if k:
        ids.extend(meta_bytes)
      if part:
        ids.extend(sp.encode(part))
    return ids

  def _decode_plain(self, ids: Sequence[int]) -> str:
    return self.backend[0].decode(list(ids))


def _epath(path: str):
  from etils import epath
  return epath.Path(path)


class HuggingFaceTokenizer(Tokenizer):
  """A `tokenizers.Tokenizer` (spec "hf:PATH/tokenizer.json" or "gguf:PATH.gguf" / "gguf:smollm2").

  Special tokens map by piece string (SPECIAL_TOKENS, then known aliases); for a GGUF, the file's
  own bos/eos/padding/unknown ids take precedence. Without a pad token, pad_id falls back to
  eos_id; without a bos token, bos_id falls back to eos_id (GPT-2's <|endoftext|> convention).
  """

  def __init__(self, spec: str):
    kind, _, path = spec.partition(":")
    if kind not in ("hf", "gguf"):
      raise TokenizerError(f"not a Hugging Face tokenizer spec: {spec!r} (expected hf:PATH or gguf:PATH)")
    if not (kind == "gguf" and path == "smollm2") and not pathlib.Path(path).is_file():
      raise TokenizerError(f"tokenizer file not found: {path} (from spec {spec!r})")
    super().__init__(spec)

  def _load(self):
    kind, _, path = self.spec.partition(":")
    if kind == "hf":
      from tokenizers import Tokenizer as HFTokenizer
      tok, gguf_ids = HFTokenizer.from_file(path), {}
    else:
      from seedcoder_jax.interop import gguf
      info = gguf.load_tokenizer_info(gguf.smollm2_path() if path == "smollm2" else path)
      tok = info.tokenizer
      gguf_ids = {"bos": info.special_ids.get("bos"), "eos": info.special_ids.get("eos"),
                  "pad": info.special_ids.get("padding"), "unk": info.special_ids.get("unknown")}
    # Special-token strings inside documents are text, not control tokens (see module docstring).
    tok.encode_special_tokens = True
    return tok, _map_special_ids(tok, gguf_ids)

  @property
  def vocab_size(self) -> int:
    return self.backend[0].get_vocab_size(with_added_tokens=True)

  @property
  def special_ids(self) -> dict[str, Optional[int]]:
    return dict(self.backend[1])

  def id_to_piece(self, token_id: int) -> str:
    return self.backend[0].id_to_token(int(token_id))

  def encode(self, text: str) -> list[int]:
    return self.backend[0].encode(text, add_special_tokens=False).ids

  def _decode_plain(self, ids: Sequence[int]) -> str:
    return self.backend[0].decode(list(ids), skip_special_tokens=False)


def _map_special_ids(tok, gguf_ids: dict) -> dict[str, Optional[int]]:
  ids: dict[str, Optional[int]] = {}
  for name, piece in SPECIAL_TOKENS.items():
    found = gguf_ids.get(name)
    for candidate in (piece, *_ALIASES.get(name, ())):
      if found is not None:
        break
      found = tok.token_to_id(candidate)
    ids[name] = found
  if ids["bos"] is None:
    ids["bos"] = ids["eos"]
  if ids["pad"] is None:
    ids["pad"] = ids["eos"]
  return ids


def load(spec: str) -> Tokenizer:
  """A tokenizer from its spec: "spm:PATH", "hf:PATH" (tokenizer.json) or "gguf:PATH"/"gguf:smollm2".

  Nothing is read but a file-existence check; the model loads on first use.
  """
  if not isinstance(spec, str) or ":" not in spec:
    raise TokenizerError(f"tokenizer spec {spec!r} must be 'spm:PATH', 'hf:PATH' or 'gguf:PATH'")
  kind, _, path = spec.partition(":")
  if kind == "spm":
    return SentencePieceTokenizer(path)
  if kind in ("hf", "gguf"):
    return HuggingFaceTokenizer(spec)
  raise TokenizerError(f"unknown tokenizer kind {kind!r} in spec {spec!r} (spm, hf or gguf)")


def train_sentencepiece(texts: Iterable[str], output: str | os.PathLike, *, vocab_size: int,
                        character_coverage: float = 0.9995, max_sentence_chars: int = 1 << 20,
                        num_threads: int = 2) -> SentencePieceTokenizer:
  """Trains the project's BPE model on `texts` (whole documents) and writes it to `output`.

  Settings for code: byte fallback (any text is representable, lossless), digits split, no
  normalisation, no dummy prefix, whitespace kept (runs of spaces/newlines become pieces),
  SPECIAL_TOKENS reserved as control symbols at ids 0..len-1 (never matched inside text).
  """
  import sentencepiece as spm
  names = list(SPECIAL_TOKENS)
  if names[:4] != ["pad", "unk", "bos", "eos"]:
    raise AssertionError("SPECIAL_TOKENS must start with pad, unk, bos, eos")
  min_vocab = len(SPECIAL_TOKENS) + 256 + 1
  if vocab_size < min_vocab:
    raise TokenizerError(f"vocab_size={vocab_size} is below the minimum {min_vocab} "
                         "(special tokens + 256 byte-fallback pieces)")
  output = pathlib.Path(output)
  output.parent.mkdir(parents=True, exist_ok=True)

  def documents() -> Iterator[str]:
    # Documents longer than SentencePiece's sentence limit are cut into pieces, not dropped.
    for text in texts:
      for start in range(0, len(text), max_sentence_chars):
        yield text[start:start + max_sentence_chars]

  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=documents(), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        split_by_whitespace=True, max_sentence_length=4 * max_sentence_chars,
        character_coverage=character_coverage, hard_vocab_limit=False,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        pad_piece=SPECIAL_TOKENS["pad"], unk_piece=SPECIAL_TOKENS["unk"],
        bos_piece=SPECIAL_TOKENS["bos"], eos_piece=SPECIAL_TOKENS["eos"],
        control_symbols=[SPECIAL_TOKENS[n] for n in names[4:]],
        num_threads=num_threads, minloglevel=2)
  except RuntimeError as e:
    raise TokenizerError(f"SentencePiece training for {output} failed: {e}") from e
  output.write_bytes(model.getvalue())
  return SentencePieceTokenizer(output)
