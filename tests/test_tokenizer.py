"""Tokenizers: lossless round trips on real source files, special tokens, pickling, errors."""

import pathlib
import pickle
import sysconfig

import pytest

from seedcoder_jax import tokenizer

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])
# Files known to hold non-ASCII text (accents, CJK, symbols) beside a spread of ordinary modules.
NON_ASCII = ["locale.py", "tokenize.py", "unicodedata.py", "encodings/idna.py", "encodings/punycode.py",
             "email/_header_value_parser.py", "test/test_unicode_identifiers.py", "test/test_re.py",
             "test/test_str.py", "test/test_codecs.py", "pydoc_data/topics.py"]


def _stdlib_texts(limit=80):
  files = sorted(STDLIB.glob("*.py"))[::4][:limit] + [STDLIB / p for p in NON_ASCII]
  texts = {}
  for f in files:
    if f.is_file():
      texts[str(f.relative_to(STDLIB))] = f.read_text(encoding="utf-8")
  return texts


@pytest.fixture(scope="module")
def texts():
  t = _stdlib_texts()
  assert sum(any(ord(c) > 127 for c in s) for s in t.values()) >= 5, "too few non-ASCII files found"
  return t


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory, texts):
  return tokenizer.train_sentencepiece(list(texts.values())[::2], tmp_path_factory.mktemp("tok") / "t.model",
                                       vocab_size=1024)


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory, texts):
  # A small byte-level BPE tokenizer.json with some of our special tokens, trained here (offline).
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  specials = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<file_sep>", "<reponame>"]
  trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(list(texts.values())[::3], trainer)
  path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
  tok.save(str(path))
  return tokenizer.load(f"hf:{path}")


ODD = ["", " ", "\n\n\t  \r\n", "a\u2581b \u2581\u2581", "x = 12345678901234567890\n", "é中文🙂\x00\x0b\ufeff",
       "<fim_prefix> is text here </s> <s>", "    def f(self):\n\t\treturn  None  \n"]


def test_spm_round_trip_stdlib(spm_tok, texts):
  for name, text in texts.items():
    assert spm_tok.decode(spm_tok.encode(text)) == text, name
  for text in ODD:
    assert spm_tok.decode(spm_tok.encode(text)) == text, repr(text)


def test_hf_round_trip_stdlib(hf_tok, texts):
  for name, text in texts.items():
    assert hf_tok.decode(hf_tok.encode(text)) == text, name
  for text in ODD:
    assert hf_tok.decode(hf_tok.encode(text)) == text, repr(text)


def test_spm_special_tokens(spm_tok):
  ids = spm_tok.special_ids
  assert list(ids) == list(tokenizer.SPECIAL_TOKENS)
  assert (spm_tok.pad_id, spm_tok.unk_id, spm_tok.bos_id, spm_tok.eos_id) == (0, 1, 2, 3)
  for name, piece in tokenizer.SPECIAL_TOKENS.items():
    assert spm_tok.id_to_piece(ids[name]) == piece
  assert len(set(ids.values())) == len(ids)
  # Special strings inside a document stay text; decode renders special ids by their pieces.
  assert not set(spm_tok.encode("<fim_prefix><file_sep></s>")) & set(ids.values())
  assert spm_tok.decode([spm_tok.fim_suffix_id] + spm_tok.encode("x") + [spm_tok.eos_id]) == "<fim_suffix>x</s>"
  assert spm_tok.vocab_size <= 1024
  # Code-friendly pieces: digits split, whitespace-only pieces exist.
  pieces = [spm_tok.id_to_piece(i) for i in spm_tok.encode("x = 1234\n        return")]
  assert {"1", "2", "3", "4"} <= set(pieces)
  assert any(p and set(p) <= {tokenizer.SPM_META_SPACE} and len(p) > 1 for p in pieces)


def test_hf_special_mapping(hf_tok):
  assert hf_tok.eos_id == hf_tok.bos_id == hf_tok.pad_id == hf_tok.backend[0].token_to_id("<|endoftext|>")
  assert hf_tok.fim_prefix_id is not None and hf_tok.repo_id is not None and hf_tok.file_sep_id is not None
  assert hf_tok.im_start_id is None and hf_tok.commit_msg_id is None
  assert hf_tok.fim_prefix_id not in hf_tok.encode("<fim_prefix>")
  with pytest.raises(tokenizer.TokenizerError, match="im_start"):
    hf_tok.require("bos", "im_start")


def test_pickle_is_lazy(spm_tok, hf_tok):
  for tok in (spm_tok, hf_tok):
    tok.encode("warm up")
    blob = pickle.dumps(tok)
    assert len(blob) < 1000  # the spec, not the model
    clone = pickle.loads(blob)
    assert clone._backend is None
    assert clone.encode("def f(): pass") == tok.encode("def f(): pass")


def test_errors(tmp_path):
  with pytest.raises(tokenizer.TokenizerError, match="not found"):
    tokenizer.load(f"spm:{tmp_path}/missing.model")
  with pytest.raises(tokenizer.TokenizerError, match="unknown tokenizer kind"):
    tokenizer.load("bpe:x")
  with pytest.raises(tokenizer.TokenizerError, match="must be"):
    tokenizer.load("no-colon")
  with pytest.raises(tokenizer.TokenizerError, match="vocab_size=100"):
    tokenizer.train_sentencepiece(["x"], tmp_path / "t.model", vocab_size=100)


@pytest.mark.slow
def test_gguf_smollm2_round_trip(texts):
  tok = tokenizer.load("gguf:smollm2")
  assert tok.vocab_size == 49152
  assert tok.repo_id is not None and tok.file_sep_id is not None and tok.im_start_id is not None
  for name, text in list(texts.items())[::3]:
    assert tok.decode(tok.encode(text)) == text, name
