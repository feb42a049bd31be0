"""BERT in C++ against a Python reference with transformers' names: the same state_dict gives the
same logits, and libprune.prune cuts the same heads from both."""
import copy
import json

import torch

import libprune
from libprune import _libprune_dev

from bert_reference import BertForSequenceClassification, config, from_pretrained


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


def test_cpp_export_reloads_through_transformers_prune_heads_rules(tmp_path):
    model, ids, mask = _model_and_batch(1)
    state = tmp_path / "bert.pt"
    torch.save(dict(model.state_dict()), state)
    _, kept, cpp_after = _libprune_dev.bert_cpp(json.dumps(model.config), str(state), ids, mask, 0.5,
                                                str(tmp_path / "hf"))
    with open(tmp_path / "hf" / "config.json") as f:
        exported = json.load(f)
    assert exported["num_attention_heads"] == 4  # the original count; pruned_heads says what went
    assert exported["pruned_heads"] == {str(l): [h for h in range(4) if h not in kept[l]] for l in range(2)}
    reloaded = from_pretrained(tmp_path / "hf").eval()
    assert [l.attention.self.num_attention_heads for l in reloaded.bert.encoder.layer] == [2, 2]
    with torch.no_grad():
        assert torch.allclose(reloaded(ids, mask), cpp_after, atol=1e-5, rtol=1e-5)


def _adamw_step(model, ids, mask, optimizer):
    torch.manual_seed(0)  # the same dropout masks for both models
    model.train()
    optimizer.zero_grad()
    model(ids, mask).pow(2).sum().backward()
    optimizer.step()
    model.eval()


def test_remove_units_is_transformers_prune_heads_in_place_and_keeps_adamw_state():
    ours, ids, mask = _model_and_batch(2)
    theirs = copy.deepcopy(ours)
    heads = {0: [1, 3], 1: [2]}
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-3)
    _adamw_step(ours, ids, mask, ours_opt)
    _adamw_step(theirs, ids, mask, theirs_opt)
    query = ours.bert.encoder.layer[0].attention.self.query.weight
    moment = ours_opt.state[query]["exp_avg"].clone()

    theirs.prune_heads(heads)
    plan = libprune.remove_units(ours, (ids, mask),
                                 {f"bert.encoder.layer.{l}.attention.self.query": h for l, h in heads.items()},
                                 optimizer=ours_opt)
    assert len(plan.groups) == 2
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert torch.equal(p, theirs_params[name]), name
    assert [l.attention.self.num_attention_heads for l in ours.bert.encoder.layer] == [2, 3]
    with torch.no_grad():
        assert torch.allclose(ours(ids, mask), theirs(ids, mask), atol=1e-6, rtol=1e-6)
    # libprune cut the tensors in place: the optimizer still holds them, with their moments cut
    # (heads 0 and 2 of layer 0 kept: rows 0-7 and 16-23).
    assert ours.bert.encoder.layer[0].attention.self.query.weight is query
    kept = torch.cat([torch.arange(0, 8), torch.arange(16, 24)])
    assert torch.equal(ours_opt.state[query]["exp_avg"], moment[kept])
    _adamw_step(ours, ids, mask, ours_opt)
    # prune_heads rebuilt the linears: the optimizer still holds the old ones, so the new weights
    # have no moments and would not even be stepped.
    theirs_query = theirs.bert.encoder.layer[0].attention.self.query.weight
    assert all(theirs_query is not p for g in theirs_opt.param_groups for p in g["params"])
    assert theirs_query not in theirs_opt.state
