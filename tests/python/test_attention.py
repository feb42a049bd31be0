"""Attention heads as pruning units, from Python: Hugging Face BERT-style and timm-style modules
(written here, so nothing is downloaded), torch's nn.MultiheadAttention, torchvision ViT and Swin."""
import copy

import pytest
import torch
import torchvision

import libprune


class BertSelfAttention(torch.nn.Module):
    """The layout and attribute names of Hugging Face's BertSelfAttention (+ output dense)."""

    def __init__(self, hidden=32, heads=4):
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = hidden // heads
        self.all_head_size = heads * self.attention_head_size
        self.query = torch.nn.Linear(hidden, self.all_head_size)
        self.key = torch.nn.Linear(hidden, self.all_head_size)
        self.value = torch.nn.Linear(hidden, self.all_head_size)
        self.dense = torch.nn.Linear(self.all_head_size, hidden)

    def split(self, x):
        return x.view(x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)).permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / self.attention_head_size ** 0.5
        ctx = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).contiguous()
        return self.dense(ctx.view(ctx.size()[:-2] + (self.all_head_size,)))


class TimmAttention(torch.nn.Module):
    """timm's Attention: one fused qkv linear, num_heads and head_dim."""

    def __init__(self, dim=32, num_heads=4):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = torch.nn.Linear(dim, dim * 3)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class Encoder(torch.nn.Module):
    def __init__(self, attention, hidden=32):
        super().__init__()
        self.embed = torch.nn.Linear(6, hidden)
        self.ln1 = torch.nn.LayerNorm(hidden)
        self.attn = attention
        self.ln2 = torch.nn.LayerNorm(hidden)
        self.fc1 = torch.nn.Linear(hidden, 2 * hidden)
        self.fc2 = torch.nn.Linear(2 * hidden, hidden)
        self.head = torch.nn.Linear(hidden, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(self.ln1(h))
        h = h + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(h))))
        return self.head(h)


def _tokens():
    torch.manual_seed(0)
    return torch.randn(2, 7, 6)


def _heads_group(graph, tensor):
    return next(g for g in graph.groups if (tensor, 0) in g.members)


@pytest.mark.parametrize("kind", ["bert", "timm"])
def test_heads_are_units_and_the_hidden_size_is_pinned(kind):
    model = Encoder(BertSelfAttention() if kind == "bert" else TimmAttention())
    graph = libprune.DependencyGraph(model, _tokens())
    q = "attn.query.weight" if kind == "bert" else "attn.qkv.weight"
    heads = _heads_group(graph, q)
    assert heads.size == 4 and not heads.pinned
    q_pos = heads.members.index((q, 0))
    if kind == "bert":
        assert heads.indices[1][q_pos] == [8, 9, 10, 11, 12, 13, 14, 15]
        assert ("attn.dense.weight", 1) in heads.members
    else:
        # Head 1 owns its rows in each of the q, k and v thirds of the fused qkv.
        assert heads.indices[1][q_pos] == [8 + s * 32 + d for s in range(3) for d in range(8)]
        assert ("attn.proj.weight", 1) in heads.members
    hidden = next(g for g in graph.groups if ("ln1.weight", 0) in g.members)
    assert hidden.hidden and hidden.pinned and "prune_hidden" in hidden.reason
    assert "PINNED: hidden size" in graph.explain()


@pytest.mark.parametrize("kind", ["bert", "timm"])
def test_prune_removes_whole_heads_and_updates_attributes(kind):
    model = Encoder(BertSelfAttention() if kind == "bert" else TimmAttention())
    x = _tokens()
    reference = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(x).sum().backward()
    opt.step()
    reference.load_state_dict(model.state_dict())
    plan = libprune.prune(model, x, ratio=0.5, ignored_layers=[model.head], optimizer=opt)
    assert plan.verification_pins == []
    attn = model.attn
    if kind == "bert":
        assert attn.num_attention_heads == 2 and attn.attention_head_size == 8 and attn.all_head_size == 16
        assert attn.query.weight.shape == (16, 32) and attn.dense.weight.shape == (32, 16)
    else:
        assert attn.num_heads == 2 and attn.head_dim == 8
        assert attn.qkv.weight.shape == (48, 32) and attn.proj.weight.shape == (32, 16)
    assert model.embed.weight.shape == (32, 6)  # hidden size kept
    assert opt.state[attn.proj.weight if kind == "timm" else attn.dense.weight]["exp_avg"].shape == (32, 16)
    # The pruned attention equals the original with the removed heads silenced (v rows zeroed).
    name = "attn.value.weight" if kind == "bert" else "attn.qkv.weight"
    kept = set(next(keep for tensor, dim, size, keep in plan.cuts if tensor == name and dim == 0))
    with torch.no_grad():
        w = reference.attn.value if kind == "bert" else reference.attn.qkv
        rows = range(32) if kind == "bert" else range(64, 96)
        for r in rows:
            if r not in kept:
                w.weight[r].zero_()
                w.bias[r].zero_()
        h = reference.ln1(reference.embed(x))
        assert torch.allclose(model.eval().attn(h), reference.attn(h), atol=1e-5)
        assert model(x).shape == (2, 7, 3)


def test_prune_hidden_cuts_the_embedding_dim():
    model = Encoder(TimmAttention())
    x = _tokens()
    libprune.prune(model, x, ratio=0.5, ignored_layers=[model.head], prune_hidden=True)
    assert model.ln1.normalized_shape == (16,) and model.embed.out_features == 16
    assert model.attn.qkv.in_features == 16 and model.head.in_features == 16
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 7, 3)


def test_register_head_adapter_for_a_custom_attribute():
    class Custom(TimmAttention):
        def __init__(self):
            super().__init__()
            del self.head_dim
            self.heads, self.width = 4, 8

        def forward(self, x):
            self.num_heads, self.head_dim = self.heads, self.width
            try:
                return super().forward(x)
            finally:
                del self.num_heads, self.head_dim

    def adapter(m):
        if not isinstance(m, Custom):
            return False
        m.heads = m.qkv.weight.shape[0] // (3 * m.width)
        return True

    model = Encoder(Custom())
    x = _tokens()
    libprune.register_head_adapter(adapter)
    try:
        plan = libprune.prune(model, x, ratio=0.5, ignored_layers=[model.head])
    finally:
        from libprune import _layers
        _layers.HEAD_ADAPTERS.remove(adapter)
    assert model.attn.heads == 2 and plan.verification_pins == []
    with pytest.raises(TypeError, match="callable"):
        libprune.register_head_adapter(3)


def test_multihead_attention_heads_are_pinned_with_the_reason():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = torch.nn.Linear(6, 32)
            self.mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
            self.out = torch.nn.Linear(32, 3)

        def forward(self, x):
            h = self.inp(x)
            return self.out(self.mha(h, h, h, need_weights=False)[0])

    model = M()
    x = _tokens()
    graph = libprune.DependencyGraph(model, x)
    heads = _heads_group(graph, "mha.in_proj_weight")
    assert heads.pinned and "head_dim = embed_dim // num_heads" in heads.reason and "mha" in heads.reason
    assert "libprune.split_attention(model)" in heads.reason  # the fix it names
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = libprune.prune(model, x, ratio=0.5, ignored_layers=[model.out])
    assert plan.empty() and plan.verification_pins == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_torchvision_vit_and_swin_prune_their_mlps_and_explain_the_rest():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                               mlp_dim=64, num_classes=10)
    swin = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                              window_size=[4, 4], num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    for model, mlp, reason in ((vit, "encoder.layers.encoder_layer_0.mlp.0", "nn.MultiheadAttention"),
                               (swin, "features.1.0.mlp.0", "ShiftedWindowAttention")):
        graph = libprune.DependencyGraph(model, x)
        assert any(g.pinned and reason in g.reason for g in graph.groups)
        width = dict(model.named_modules())[mlp].out_features
        head = model.heads.head if model is vit else model.head
        plan = libprune.prune(model, x, ratio=0.5, ignored_layers=[head])
        assert plan.verification_pins == []
        assert dict(model.named_modules())[mlp].out_features == width // 2
        with torch.no_grad():
            assert model.eval()(x).shape == (1, 10)


# nn.MultiheadAttention split into q/k/v linears (libprune.split_attention): equal outputs, heads as units.

@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 12])
def test_split_attention_equals_multihead_attention_and_merges_back(batch_first, kdim):
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    split = libprune.attention.SplitMultiheadAttention.from_torch(mha).eval()
    q = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
    k = torch.randn(2, 5, kdim or 32) if batch_first else torch.randn(5, 2, kdim or 32)
    causal = torch.ones(7, 5, dtype=torch.bool).triu(1)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True
    cases = [{}, {"attn_mask": causal}, {"key_padding_mask": padding},
             {"attn_mask": causal.float() * -3, "key_padding_mask": padding, "average_attn_weights": False},
             {"need_weights": False}]
    with torch.no_grad():
        for kwargs in cases:
            want, got = mha(q, k, k, **kwargs), split(q, k, k, **kwargs)
            assert torch.allclose(got[0], want[0], atol=1e-6), kwargs
            assert (got[1] is None) == (want[1] is None)
            if want[1] is not None:
                assert torch.allclose(got[1], want[1], atol=1e-6), kwargs
        per_head = torch.randn(2 * 4, 7, 5)  # a 3-d float mask: one per batch entry and head
        want, got = mha(q, k, k, attn_mask=per_head), split(q, k, k, attn_mask=per_head)
        assert torch.allclose(got[0], want[0], atol=1e-6) and torch.allclose(got[1], want[1], atol=1e-6)
        unbatched = q[0] if batch_first else q[:, 0]
        key = k[0] if batch_first else k[:, 0]
        for kwargs in ({}, {"attn_mask": causal, "key_padding_mask": padding[1]}):
            want, got = mha(unbatched, key, key, **kwargs), split(unbatched, key, key, **kwargs)
            assert torch.allclose(got[0], want[0], atol=1e-6) and torch.allclose(got[1], want[1], atol=1e-6)
        back = split.to_torch()
        assert torch.allclose(back(q, k, k)[0], mha(q, k, k)[0], atol=1e-6)
    # nn.MultiheadAttention's state_dict keys load into the split module, also nested and strict.
    fresh = torch.nn.Sequential(libprune.attention.SplitMultiheadAttention(32, 4, kdim=kdim, vdim=kdim,
                                                                           batch_first=batch_first)).eval()
    fresh.load_state_dict(torch.nn.Sequential(mha).state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(fresh[0](q, k, k)[0], mha(q, k, k)[0], atol=1e-6)
    # Training with dropout: the same seed draws the same mask over the same (batch x heads, L, S) weights.
    mha.dropout = split.dropout = 0.5
    mha.train(), split.train()
    torch.manual_seed(3)
    want = mha(q, k, k)
    torch.manual_seed(3)
    got = split(q, k, k)
    assert torch.allclose(got[0], want[0], atol=1e-6) and torch.allclose(got[1], want[1], atol=1e-6)


class TextClassifier(torch.nn.Module):
    """An nn.TransformerEncoder text classifier, as plain-PyTorch BERTs are written."""

    def __init__(self, heads=10, head_dim=4):
        super().__init__()
        width = heads * head_dim
        self.embed = torch.nn.Embedding(50, width)
        layer = torch.nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2)
        self.fc = torch.nn.Linear(width, 3)

    def forward(self, tokens):
        # The mean over real tokens: torch's fast path (eval, nested tensors) leaves padding 0.
        pad = tokens == 0
        h = self.encoder(self.embed(tokens), src_key_padding_mask=pad).masked_fill(pad.unsqueeze(-1), 0)
        return self.fc(h.sum(1) / (~pad).sum(1, keepdim=True))


def test_transformer_encoder_loses_30_percent_of_its_heads_exact_to_the_masked_dense_model():
    torch.manual_seed(0)
    model = TextClassifier()
    tokens = torch.randint(1, 50, (3, 9))
    tokens[2, 6:] = 0  # padding
    dense = copy.deepcopy(model).eval()
    assert libprune.split_attention(model) == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    with torch.no_grad():
        assert torch.allclose(model.eval()(tokens), dense(tokens), atol=1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    model(tokens).sum().backward()
    opt.step()
    dense = copy.deepcopy(model)  # the trained weights, back in nn.MultiheadAttention
    assert libprune.merge_attention(dense) == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    assert isinstance(dense.encoder.layers[0].self_attn, torch.nn.MultiheadAttention)
    ffn = [m for n, m in model.named_modules() if n.endswith("linear1")]
    plan = libprune.prune(model, tokens, ratio=0.3, ignored_layers=[model.fc] + ffn, optimizer=opt)
    assert plan.verification_pins == []
    for layer in model.encoder.layers:
        attn = layer.self_attn
        assert attn.num_heads == 7 and attn.head_dim == 4 and attn.q_proj.weight.shape == (28, 40)
        assert attn.out_proj.weight.shape == (40, 28) and opt.state[attn.out_proj.weight]["exp_avg"].shape == (40, 28)
    # The dense model with the cut heads silenced (their v rows and biases zeroed) gives the same output.
    with torch.no_grad():
        for i, layer in enumerate(dense.encoder.layers):
            kept = set(next(keep for t, d, size, keep in plan.cuts if t == f"encoder.layers.{i}.self_attn.v_proj.weight"))
            for r in range(40):
                if r not in kept:
                    layer.self_attn.in_proj_weight[80 + r].zero_()
                    layer.self_attn.in_proj_bias[80 + r].zero_()
        assert torch.allclose(model.eval()(tokens), dense.eval()(tokens), atol=1e-5)
    model.train()
    model(tokens).sum().backward()  # trains on
    opt.step()
    with pytest.raises(ValueError, match="7 heads of 4 for embed_dim 40"):
        libprune.merge_attention(model)
    assert isinstance(model.encoder.layers[0].self_attn, libprune.attention.SplitMultiheadAttention)


def test_split_attention_refuses_what_it_does_not_implement_and_changes_nothing():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.MultiheadAttention(8, 2)
            self.b = torch.nn.MultiheadAttention(8, 2, add_bias_kv=True)

    model = Two()
    with pytest.raises(ValueError, match="'b' uses add_bias_kv"):
        libprune.split_attention(model)
    assert isinstance(model.a, torch.nn.MultiheadAttention)
    with pytest.raises(TypeError, match="split_attention: expected an nn.Module"):
        libprune.split_attention("model")
    with pytest.raises(ValueError, match="the model itself is a MultiheadAttention"):
        libprune.split_attention(model.a)
    with pytest.raises(TypeError, match="attn_mask must be bool or floating point"):
        libprune.attention.SplitMultiheadAttention(8, 2)(*[torch.randn(3, 1, 8)] * 3, attn_mask=torch.zeros(3, 3, dtype=torch.int64))


def test_split_attention_keeps_sharing_and_frozen_weights():
    shared = torch.nn.MultiheadAttention(8, 2)
    shared.in_proj_weight.requires_grad_(False)
    model = torch.nn.ModuleDict({"a": torch.nn.ModuleList([shared]), "b": torch.nn.ModuleList([shared])})
    assert libprune.split_attention(model) == ["a.0", "b.0"]
    assert model["a"][0] is model["b"][0]  # one module still, in both places
    split = model["a"][0]
    assert not split.q_proj.weight.requires_grad and not split.v_proj.weight.requires_grad
    assert split.q_proj.bias.requires_grad and split.out_proj.weight.requires_grad
    x = torch.randn(3, 1, 8)
    mask = torch.zeros(3, 3, dtype=torch.uint8)
    mask[0, 2] = 1  # a byte mask means what a boolean one does, as in torch
    with torch.no_grad():
        assert torch.allclose(split(x, x, x, attn_mask=mask)[0], shared(x, x, x, attn_mask=mask.bool())[0], atol=1e-6)


def test_vit_with_split_attention_and_prune_hidden_loses_heads_and_width():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                               mlp_dim=64, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    pinned = copy.deepcopy(vit)
    libprune.split_attention(vit)
    dense = libprune.count_ops(vit, x).macs
    plan = libprune.prune(vit, x, ratio=0.5, ignored_layers=[vit.heads.head], prune_hidden=True)
    libprune.prune(pinned, x, ratio=0.5, ignored_layers=[pinned.heads.head], prune_hidden=True)
    assert plan.verification_pins == []
    assert vit.hidden_dim == 16 and vit.class_token.shape == (1, 1, 16)
    attn = vit.encoder.layers.encoder_layer_0.self_attention
    assert attn.num_heads == 2 and attn.head_dim == 8
    assert dense / libprune.count_ops(vit, x).macs >= 3 > dense / libprune.count_ops(pinned, x).macs
    with torch.no_grad():
        assert vit.eval()(x).shape == (1, 10)
