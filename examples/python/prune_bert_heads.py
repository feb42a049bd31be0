#!/usr/bin/env python3
# %% [markdown]
# # Attention heads of a BERT pruned inside fine-tuning, from Python, and exported for transformers
#
# The same recipe as `libprune-run configs/bert_wordnet_heads30.json` (BERT-mini trained from
# scratch on WordNet noun supersenses, 30% of the heads cut by global L1 ranking, then fine-tuned),
# through `libprune.run_recipe`, at a size that finishes in about 4 minutes on 2 cores:
#
#     PYTHONPATH=build/python /usr/bin/python3 examples/python/prune_bert_heads.py
#
# `--full` runs the recipe as shipped (the whole corpus, about 45 minutes). `--ffn` also cuts 40% of
# every layer's feed-forward neurons (configs/bert_wordnet_heads30_ffn40.json). The run folder holds
# summary.json, metrics.jsonl, the tokenizer and hf/ (config.json with pruned_heads, and
# pytorch_model.bin), which transformers' BertForSequenceClassification.from_pretrained loads.

# %%
import argparse
import json
import os

import libprune

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--full", action="store_true", help="the recipe as shipped (the whole corpus)")
parser.add_argument("--ffn", action="store_true", help="heads and 40%% of the FFN neurons")
parser.add_argument("--out", default="runs/example_bert_heads")
args, _ = parser.parse_known_args()

# %%
recipe = "configs/bert_wordnet_heads30_ffn40.json" if args.ffn else "configs/bert_wordnet_heads30.json"
here = os.path.dirname(os.path.abspath(__file__))
recipe = os.path.join(here, "..", "..", recipe)
overrides = {"output_dir": args.out}
if not args.full:  # 2,000 training texts, a 1,000-piece vocabulary, 4 epochs with the cut after 3
    overrides.update({"data.limit_train": 2000, "data.limit_eval": 500, "data.vocab_size": 1000,
                      "training.epochs": 4, "training.lr_schedule.restarts": [3],
                      "pruning.0.schedule.start_epoch": 3, "report.latency_tokens": 32,
                      "report.latency_batches": [1, 32], "report.latency_runs": 3})
summary = libprune.run_recipe(recipe, overrides, quiet=True)

# %%
for row in ("dense", "pruned"):
    r = summary[row]
    print(f"{row:>6}: top-1 {r['accuracy']:.2f}%  macro-F1 {r.get('macro_f1', float('nan')):.2f}%  "
          f"params {r['params'] / 1e6:.2f}M  latency b1 {r.get('latency_ms_b1', float('nan')):.2f} ms  "
          f"b32 {r.get('latency_ms_b32', float('nan')):.2f} ms")

# %% The export: the original head count and the heads each layer lost, as transformers expects.
with open(os.path.join(args.out, "hf", "config.json")) as f:
    config = json.load(f)
print("num_attention_heads", config["num_attention_heads"], "pruned_heads", config.get("pruned_heads", {}))
print("intermediate_size", config["intermediate_size"],
      "(per layer: " + str(config["libprune_intermediate_sizes"]) + ")" if "libprune_intermediate_sizes" in config else "")
