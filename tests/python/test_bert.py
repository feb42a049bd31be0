"""BERT in C++ against a Python reference with transformers' names: the same state_dict gives the
same logits, and libprune.prune cuts the same heads from both."""
import json

import torch

import libprune
from libprune import _libprune_dev

from bert_reference import BertForSequenceClassification, config


def _model_and_batch(seed=0):
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config())
    with torch.no_grad():  # weights far from transformers' tiny init, so heads differ in importance
        for p in model.parameters():
            p.normal_(0, 0.3)
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    ids[0, 6:] = 0
    return model.eval(), ids, mask


def test_cpp_bert_has_the_reference_names_and_logits(tmp_path):
    model, ids, mask = _model_and_batch()
    state = tmp_path / "bert.pt"
    torch.save(dict(model.state_dict()), state)
    with torch.no_grad():
        expected = model(ids, mask)
    cpp, _, _ = _libprune_dev.bert_cpp(json.dumps(model.config), str(state), ids, mask, 0.0)
    assert torch.allclose(cpp, expected, atol=1e-5, rtol=1e-5), (cpp - expected).abs().max()
    # The mask matters: without it the logits of the padded row move.
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0], expected[0], atol=1e-4)


def test_prune_cuts_the_same_heads_in_cpp_and_python(tmp_path):
    model, ids, mask = _model_and_batch(1)
    state = tmp_path / "bert.pt"
    torch.save(dict(model.state_dict()), state)
    _, cpp_heads, cpp_after = _libprune_dev.bert_cpp(json.dumps(model.config), str(state), ids, mask, 0.5)
    plan = libprune.prune(model, (ids, mask), ratio=0.5, ignored_layers=["classifier"],
                          overrides={r".*intermediate\.dense": 0.0, r".*pooler\.dense": 0.0})
    assert plan.verification_pins == []
    head = 32 // 4
    py_heads = []
    for layer in model.bert.encoder.layer:
        attn = layer.attention.self
        assert attn.num_attention_heads == 2 and attn.all_head_size == 16
        assert layer.intermediate.dense.out_features == 48
    for l in range(2):
        name = f"bert.encoder.layer.{l}.attention.self.query.weight"
        keep = [k for tensor, dim, _, k in plan.cuts if tensor == name and dim == 0][0]
        py_heads.append([k // head for k in keep[::head]])
    assert py_heads == cpp_heads
    with torch.no_grad():
        assert torch.allclose(model(ids, mask), cpp_after, atol=1e-5, rtol=1e-5)
