#!/usr/bin/env python3
"""The embedder's peer for `make bench`: all-MiniLM-L6-v2 on ONNX Runtime (CPU, 2 threads).

Installed for the benchmark only (scripts/bench.sh puts onnxruntime in a throwaway venv); the
product does not depend on it. The ONNX graph is built here from the same safetensors the
product loads, with ONNX Runtime's own fused transformer operators (EmbedLayerNormalization,
Attention, SkipLayerNormalization, BiasGelu: what its transformer optimizer emits for BERT), so
the peer runs ONNX Runtime at its best, not a naive graph.

    onnx_embedder.py MODEL_DIR INPUT.json BATCH[,BATCH...]  ->  JSON on stdout
    INPUT.json: {"texts": [...], "rate_text": "..."}
    out: {"version": ort version, "rates": {"1": texts/s, ...}, "vectors": [[...], ...]}
    (the vectors of `texts`, in order; each rate on copies of `rate_text`, `batch` per call,
    for PEER_SECONDS seconds after one call to warm up: the loop `make bench` runs for ours)
"""
import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def build(model_dir, path):
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    p = lambda k: w[k] if k in w else w["bert." + k]
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    e = "embeddings."
    nodes.append(helper.make_node(
        "EmbedLayerNormalization",
        ["ids", "types", init("wemb", p(e + "word_embeddings.weight")),
         init("pemb", p(e + "position_embeddings.weight")),
         init("temb", p(e + "token_type_embeddings.weight")),
         init("eg", p(e + "LayerNorm.weight")), init("eb", p(e + "LayerNorm.bias")), "mask"],
        ["h0", "mask_index"], domain="com.microsoft", epsilon=cfg["layer_norm_eps"]))
    x = "h0"
    for i in range(cfg["num_hidden_layers"]):
        l = f"encoder.layer.{i}."
        a = l + "attention."
        qkv_w = np.concatenate([p(a + f"self.{n}.weight").T for n in ("query", "key", "value")], 1)
        qkv_b = np.concatenate([p(a + f"self.{n}.bias") for n in ("query", "key", "value")])
        nodes.append(helper.make_node(
            "Attention", [x, init(f"qkvw{i}", qkv_w), init(f"qkvb{i}", qkv_b), "mask_index"],
            [f"att{i}"], domain="com.microsoft", num_heads=heads))
        nodes.append(helper.make_node(
            "MatMul", [f"att{i}", init(f"ow{i}", p(a + "output.dense.weight").T)], [f"ao{i}"]))
        nodes.append(helper.make_node(
            "SkipLayerNormalization",
            [f"ao{i}", x, init(f"ag{i}", p(a + "output.LayerNorm.weight")),
             init(f"ab{i}", p(a + "output.LayerNorm.bias")), init(f"obias{i}", p(a + "output.dense.bias"))],
            [f"y{i}"], domain="com.microsoft", epsilon=cfg["layer_norm_eps"]))
        nodes.append(helper.make_node(
            "MatMul", [f"y{i}", init(f"iw{i}", p(l + "intermediate.dense.weight").T)], [f"i{i}"]))
        nodes.append(helper.make_node(
            "BiasGelu", [f"i{i}", init(f"ib{i}", p(l + "intermediate.dense.bias"))], [f"g{i}"],
            domain="com.microsoft"))
        nodes.append(helper.make_node(
            "MatMul", [f"g{i}", init(f"o2w{i}", p(l + "output.dense.weight").T)], [f"o{i}"]))
        out = "hidden" if i == cfg["num_hidden_layers"] - 1 else f"h{i + 1}"
        nodes.append(helper.make_node(
            "SkipLayerNormalization",
            [f"o{i}", f"y{i}", init(f"og{i}", p(l + "output.LayerNorm.weight")),
             init(f"ob{i}", p(l + "output.LayerNorm.bias")), init(f"o2b{i}", p(l + "output.dense.bias"))],
            [out], domain="com.microsoft", epsilon=cfg["layer_norm_eps"]))
        x = out
    ints = lambda n: helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "seq"])
    graph = helper.make_graph(
        nodes, "minilm", [ints("ids"), ints("types"), ints("mask")],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, path)


def main():
    model_dir, input_path, batches = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3].split(",")]
    job = json.load(open(input_path))
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"minilm-fused-{os.getpid()}.onnx")
    build(model_dir, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("PEER_THREADS", "2"))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    os.remove(path)
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding()

    def embed(batch):
        enc = tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int32)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int32)
        hidden = session.run(None, {"ids": ids, "types": np.zeros_like(ids), "mask": mask})[0]
        m = mask[:, :, None].astype(np.float32)
        mean = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)

    texts = job["texts"]
    vectors = [v for i in range(0, len(texts), 8) for v in embed(texts[i:i + 8]).tolist()]
    rates = {}
    seconds = float(os.environ.get("PEER_SECONDS", "3"))
    for b in batches:
        batch = [job["rate_text"]] * b
        embed(batch)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            embed(batch)
            done += b
        rates[str(b)] = done / (time.perf_counter() - start)
    json.dump({"version": ort.__version__, "rates": rates, "vectors": vectors}, sys.stdout)


if __name__ == "__main__":
    main()
