"""Write a ModernBERT-base-shaped classifier with random weights, for speed measurements only.

No ModernBERT checkpoint can be fetched on machines without a model hub, and speed does not
depend on the weights: this folder has ModernBERT-base's config (22 layers, 768 wide, GeGLU
1152, local window 128 in two of every three layers, RoPE bases 160k / 10k), seeded random
weights, and the bundled MiniLM's WordPiece tokenizer (its ids fit the 50368-row table), so
`benchmarks/bench_lengths.py` can run it on real reviews at their real length. Its outputs
mean nothing; its accuracy is not a number to quote.

    python tools/random_modernbert.py out/modernbert-base-random
    python benchmarks/bench_lengths.py out/modernbert-base-random
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=22, help="ModernBERT-base has 22")
    args = ap.parse_args()

    import torch
    import transformers as tf

    from edgeformer.models import load_model

    torch.manual_seed(0)
    cfg = tf.ModernBertConfig(num_hidden_layers=args.layers, num_labels=2, id2label={0: "negative", 1: "positive"},
                              label2id={"negative": 0, "positive": 1}, pad_token_id=0, cls_token_id=101, sep_token_id=102,
                              bos_token_id=101, eos_token_id=102)
    model = tf.ModernBertForSequenceClassification(cfg).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    (args.out / "tokenizer.json").write_bytes(load_model("minilm").hf.tokenizer_file.read_bytes())
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: ModernBERT-base shape, {args.layers} layers, {n / 1e6:.1f}M parameters, random weights")


if __name__ == "__main__":
    main()
