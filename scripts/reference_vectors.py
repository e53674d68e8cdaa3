#!/usr/bin/env python3
"""Reference embeddings for all-MiniLM-L6-v2, computed by an independent implementation
(numpy, straight from the published BERT equations and the sentence-transformers pooling
config: attention-masked mean pooling, then L2 normalization).

The Rust embedder's test asserts cosine >= 0.99 against these vectors. Run once; the output
is committed at shared/embed/tests/data/reference_vectors.json.

    pip install numpy tokenizers safetensors
    python3 scripts/reference_vectors.py ~/.cache/assistant/models/all-MiniLM-L6-v2
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "The client wants to rebalance her retirement portfolio before year end.",
    "Schedule a call with John about the 529 college savings plan.",
    "Quarterly earnings beat expectations, driven by strong cloud revenue.",
    "Users keep asking for a dark mode in the mobile app.",
    "Can we move Tuesday's meeting to Thursday afternoon?",
    "A cat sleeps on the warm windowsill.",
]


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):  # the exact (erf) GELU that BERT uses
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def embed(weights, cfg, tok, text):
    enc = tok.encode(text)
    ids = np.array(enc.ids)
    n = len(ids)
    p = lambda k: weights[k] if k in weights else weights["bert." + k]
    h = p("embeddings.word_embeddings.weight")[ids]
    h = h + p("embeddings.position_embeddings.weight")[:n]
    h = h + p("embeddings.token_type_embeddings.weight")[np.zeros(n, dtype=int)]
    h = layer_norm(h, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"))
    heads = cfg["num_attention_heads"]
    d = cfg["hidden_size"] // heads
    for i in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{i}."
        lin = lambda x, name: x @ p(pre + name + ".weight").T + p(pre + name + ".bias")
        q = lin(h, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(h, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(h, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        ctx = (scores @ v).transpose(1, 0, 2).reshape(n, heads * d)
        h = layer_norm(h + lin(ctx, "attention.output.dense"),
                       p(pre + "attention.output.LayerNorm.weight"),
                       p(pre + "attention.output.LayerNorm.bias"))
        ff = lin(gelu(lin(h, "intermediate.dense")), "output.dense")
        h = layer_norm(h + ff, p(pre + "output.LayerNorm.weight"), p(pre + "output.LayerNorm.bias"))
    mean = h.mean(0)  # a single unpadded sentence: every token counts
    return (mean / np.linalg.norm(mean)).tolist()


def main():
    model_dir = os.path.expanduser(sys.argv[1])
    weights = {k: v.astype(np.float64) for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    out = [{"text": s, "vector": [round(x, 7) for x in embed(weights, cfg, tok, s)]} for s in SENTENCES]
    json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2",
               "implementation": "numpy reference (scripts/reference_vectors.py)",
               "sentences": out}, sys.stdout)


if __name__ == "__main__":
    main()
