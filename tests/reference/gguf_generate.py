"""Reference for tests/test_sampling.py: transformers' greedy `generate` on the SmolLM2 GGUF.

Usage: gguf_generate.py GGUF_PATH REQUEST.json OUT_DIR

REQUEST.json: {"prompts": [[int, ...], ...], "max_new_tokens": int}
Each prompt is continued on its own (no padding), float32, do_sample=False, stopping at the
model's EOS as transformers does by default. Writes OUT_DIR/result.json: {"generated": [[int, ...],
...] (new ids, EOS included when reached), "eos_token_id": int | list}.
"""

import json
import pathlib
import sys

import torch
from transformers import AutoModelForCausalLM


def main(gguf_path: str, request_path: str, out_dir: str) -> None:
  gguf_path = pathlib.Path(gguf_path)
  request = json.loads(pathlib.Path(request_path).read_text())
  torch.manual_seed(0)
  torch.set_num_threads(2)
  model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                               dtype=torch.float32)
  model.eval()
  eos = model.generation_config.eos_token_id
  generated = []
  with torch.no_grad():
    for ids in request["prompts"]:
      prompt = torch.tensor([ids])
      out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                           max_new_tokens=request["max_new_tokens"],
                           pad_token_id=eos if isinstance(eos, int) else eos[0])
      generated.append(out[0, prompt.shape[1]:].tolist())
  (pathlib.Path(out_dir) / "result.json").write_text(
      json.dumps({"generated": generated, "eos_token_id": eos}))


if __name__ == "__main__":
  main(*sys.argv[1:4])
