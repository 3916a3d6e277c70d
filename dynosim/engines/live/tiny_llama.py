"""Build a tiny random-weight Llama and a locally trained BPE tokenizer (no hub access).

Run with the Python of the vLLM venv (it needs torch, transformers and
tokenizers; nothing from dynosim)::

    ~/.cache/dynosim/venv-vllm/bin/python dynosim/engines/live/tiny_llama.py OUT_DIR [--vocab 2048] [--layers 2]

The tokenizer is byte-level BPE trained on the Python standard library's
sources (present on every machine), so the build is offline and, with the
fixed seeds, deterministic. The model is what a CPU vLLM can serve in
milliseconds per step: enough to exercise scheduling, prefix caching, KV
events and NIXL hand-offs, while the text it writes is noise. Weights are
saved in float32 (the CPU build's bf16 eager attention can die with SIGILL).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sysconfig


def build(out: str, vocab_size: int = 2048, hidden: int = 128, ffn: int = 256, layers: int = 2,
          heads: int = 4, max_len: int = 2048) -> dict:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train(files, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                         show_progress=False))
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>", model_max_length=max_len)
    hf_tok.chat_template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '\n' }}"
                            "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
    hf_tok.save_pretrained(out)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_len,
                      bos_token_id=bos, eos_token_id=eos, pad_token_id=hf_tok.pad_token_id,
                      tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=10000.0, torch_dtype="float32")
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    info = {"path": out, "params": sum(p.numel() for p in model.parameters()), "vocab_size": len(hf_tok),
            "layers": layers, "hidden": hidden, "kv_heads": heads, "head_dim": hidden // heads,
            "max_model_len": max_len, "dtype": "float32"}
    with open(os.path.join(out, "dynosim_tiny_model.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=2048)
    a = ap.parse_args()
    print(json.dumps(build(a.out, a.vocab, a.hidden, a.ffn, a.layers, max_len=a.max_len)))


if __name__ == "__main__":
    main()
