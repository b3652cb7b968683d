"""Reference for tests/test_interop_gguf.py: transformers' own GGUF loading (dequantised, float32).

Usage: gguf_llama.py GGUF_PATH REQUEST.json OUT_DIR

REQUEST.json: {"texts": [str, ...],          strings to tokenize (no special tokens added)
               "logits_ids": [int, ...],     optional: a prompt whose float32 logits are wanted
               "generate_ids": [int, ...],   with logits_ids: a prompt to continue greedily
               "max_new_tokens": int}
Writes OUT_DIR/result.json ({"token_ids": [[...], ...], "decoded": [...], "chat_template": str |
null, "generated": [...] with logits_ids}) and, with logits_ids, OUT_DIR/logits.npy ([T, V]
float32). Without logits_ids the model is not loaded (that alone takes most of a minute).
"""

import json
import pathlib
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(gguf_path: str, request_path: str, out_dir: str) -> None:
  gguf_path = pathlib.Path(gguf_path)
  request = json.loads(pathlib.Path(request_path).read_text())
  out = pathlib.Path(out_dir)
  torch.manual_seed(0)
  torch.set_num_threads(2)

  tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
  token_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in request["texts"]]
  decoded = [tokenizer.decode(ids) for ids in token_ids]
  result = {"token_ids": token_ids, "decoded": decoded,
            "chat_template": getattr(tokenizer, "chat_template", None)}
  if "logits_ids" not in request:
    (out / "result.json").write_text(json.dumps(result))
    return

  model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                               dtype=torch.float32)
  model.eval()
  with torch.no_grad():
    logits = model(torch.tensor([request["logits_ids"]])).logits[0].float().numpy()
    prompt = torch.tensor([request["generate_ids"]])
    generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                               max_new_tokens=request["max_new_tokens"],
                               min_new_tokens=request["max_new_tokens"],
                               pad_token_id=tokenizer.pad_token_id)
  result["generated"] = generated[0, prompt.shape[1]:].tolist()
  np.save(out / "logits.npy", logits.astype(np.float32))
  (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
  main(*sys.argv[1:4])
