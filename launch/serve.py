r"""Serves a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions,
/v1/models), batching concurrent requests into one sampler call.

  python launch/serve.py --model=gguf:smollm2 --port=8000
  python launch/serve.py --model=hf:/ckpt/Seed-Coder-8B-Instruct --max_len=8192 --max_batch=32
  python launch/serve.py --model=orbax:workdir/sft/params \
      --tokenizer=spm:workdir/tokenizer/tok.model

Then any OpenAI client works:
  openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused").chat.completions.create(
      model="smollm2", messages=[{"role": "user", "content": "Write a Python add function."}],
      temperature=0)
The model name to send is --model_name (default: the checkpoint's file or directory name).
stream=true is accepted, but each choice arrives whole once generated; see
seedcoder_jax/sampling/server.py for the fields, limits and errors.
"""

from absl import app, flags, logging

from seedcoder_jax import xla_cpu
from seedcoder_jax.sampling import server

_MODEL = flags.DEFINE_string("model", None, "gguf:smollm2 | gguf:FILE.gguf | hf:DIR | orbax:DIR",
                             required=True)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer spec (spm:PATH, hf:tokenizer.json, "
                                 "gguf:FILE) when the checkpoint has none or another is wanted.")
_MODEL_NAME = flags.DEFINE_string("model_name", None, "Name clients send as `model`.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: all).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_MAX_LEN = flags.DEFINE_integer("max_len", 2048, "Context: prompt + completion tokens per row "
                                "(the KV cache length; capped at the model's max_seq_len).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 16, "Rows (prompts x n) per generate call.")
_BATCH_WINDOW_MS = flags.DEFINE_float("batch_window_ms", 10.0, "How long the worker waits for "
                                      "more requests before starting a batch.")
_MAX_TOKENS_LIMIT = flags.DEFINE_integer("max_tokens_limit", 1024, "Largest max_tokens a request "
                                         "may ask for.")
_DEFAULT_MAX_TOKENS = flags.DEFINE_integer("default_max_tokens", 16, "max_tokens of completions "
                                           "requests that give none (OpenAI's default).")
_MAX_N = flags.DEFINE_integer("max_n", 16, "Largest n (choices per prompt).")
_MAX_PENDING_ROWS = flags.DEFINE_integer("max_pending_rows", 1024, "Rows that may wait for the "
                                         "sampler; beyond them requests get HTTP 429.")
_CHAT_TEMPLATE = flags.DEFINE_string("chat_template", None, "A Jinja chat template file overriding "
                                     "the model's own.")
_ADD_BOS = flags.DEFINE_enum("add_bos", "auto", ["auto", "true", "false"], "Prepend BOS to text "
                             "prompts (auto: the tokenizer's convention).")
_XLA_CPU_SCHEDULER = xla_cpu.define_flag()
_FIM_ORDER = flags.DEFINE_enum("fim_order", "spm", ["spm", "psm"], "Layout of `suffix` "
                               "(fill-in-the-middle) completions.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  logging.set_verbosity(logging.INFO)
  openai_server = server.build(
      _MODEL.value, tokenizer_spec=_TOKENIZER.value, model_name=_MODEL_NAME.value,
      max_len=_MAX_LEN.value, chat_template=_CHAT_TEMPLATE.value,
      add_bos=None if _ADD_BOS.value == "auto" else _ADD_BOS.value == "true",
      max_batch=_MAX_BATCH.value, batch_window_ms=_BATCH_WINDOW_MS.value,
      max_tokens_limit=_MAX_TOKENS_LIMIT.value, default_max_tokens=_DEFAULT_MAX_TOKENS.value,
      max_n=_MAX_N.value, max_pending_rows=_MAX_PENDING_ROWS.value,
      fim_order=_FIM_ORDER.value)
  server.serve(openai_server, host=_HOST.value, port=_PORT.value)


if __name__ == "__main__":
  app.run(main)
