#!/usr/bin/env python3
"""Heads of nn.MultiheadAttention models before and after libprune.split_attention (issue 13).

Two models, random weights, eval mode, --threads threads:
  - torchvision vit_b_16 (1x3x224x224), ratio 0.5 with prune_hidden and the classifier ignored:
    as torch builds it (its heads pinned: only the MLPs and what they reach are cut) and split;
  - an nn.TransformerEncoder text classifier shaped like BERT-base (12 layers, hidden 768, 12 heads,
    FFN 3072, sequence 128), 30% of its heads (FFN and hidden kept), split.
For each: MACs and parameters against dense, the prune time, the heads left, and the latency of
the dense and the pruned model at batch 1 (median of --repeats, with the spread; each timing the
median of --runs calls after a warm-up), measured side by side in one run.

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_attention.py [--threads 2] [--repeats 3] [--runs 5]
"""
import argparse
import copy
import statistics
import time

import torch
import torchvision

import libprune


def timed_ms(model, x, runs):
    with torch.no_grad():
        model(x)
        calls = []
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            calls.append(1000 * (time.perf_counter() - t))
    return statistics.median(calls)


class Text(torch.nn.Module):
    def __init__(self, layers=12, hidden=768, heads=12, ffn=3072, vocab=8000):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        layer = torch.nn.TransformerEncoderLayer(hidden, heads, ffn, batch_first=True, activation="gelu")
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.fc = torch.nn.Linear(hidden, 26)

    def forward(self, tokens):
        return self.fc(self.encoder(self.embed(tokens)).mean(1))


def heads_left(model):
    return sorted({m.num_heads for m in model.modules() if isinstance(m, libprune.attention.SplitMultiheadAttention)})


def row(name, dense, model, x, plan_s, args, latencies):
    d_macs, d_params = libprune.count_ops(dense, x)
    macs, params = libprune.count_ops(model, x)
    lat = latencies[name]
    d_lat = latencies["dense " + name.split()[0]]
    m, lo, hi = statistics.median(lat), min(lat), max(lat)
    dm = statistics.median(d_lat)
    print(f"| {name} | {d_macs / macs:.2f}x | {d_params / params:.2f}x | {plan_s:.1f} s | {heads_left(model) or 'pinned'} "
          f"| {dm:.1f} -> {m:.1f} ms [{lo:.1f}, {hi:.1f}] ({dm / m:.2f}x) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = torch.randn(1, 3, 224, 224)
    tokens = torch.randint(1, 8000, (1, 128))
    vit = torchvision.models.vit_b_16().eval()
    text = Text().eval()
    models = {"dense vit_b_16": (vit, image), "dense text": (text, tokens)}
    cases = []
    for name, dense, x, split, kwargs in (
            ("vit_b_16 as built", vit, image, False, {"ratio": 0.5, "prune_hidden": True}),
            ("vit_b_16 split", vit, image, True, {"ratio": 0.5, "prune_hidden": True}),
            ("text split", text, tokens, True, {"ratio": 0.3})):
        model = copy.deepcopy(dense)
        if split:
            libprune.split_attention(model)
        ignored = [model.heads.head] if isinstance(model, torchvision.models.VisionTransformer) else \
            [model.fc] + [m for n, m in model.named_modules() if n.endswith("linear1")]
        t = time.perf_counter()
        plan = libprune.prune(model, x, ignored_layers=ignored, **kwargs)
        plan_s = time.perf_counter() - t
        assert plan.verification_pins == [], plan.verification_pins
        models[name] = (model.eval(), x)
        cases.append((name, dense, model, x, plan_s))
    latencies = {name: [] for name in models}
    for _ in range(args.repeats):  # interleaved, so a busy spell hits every model
        for name, (model, x) in models.items():
            latencies[name].append(timed_ms(model, x, args.runs))
    print(f"{args.threads} threads, batch 1, median of {args.repeats} rounds [spread]\n")
    print("| model | MACs | params | prune | heads left | latency b1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, dense, model, x, plan_s in cases:
        row(name, dense, model, x, plan_s, args, latencies)


if __name__ == "__main__":
    main()
