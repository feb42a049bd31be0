"""nn.MultiheadAttention with prunable heads.

torch's nn.MultiheadAttention packs q, k and v into one `in_proj_weight` and derives the head size
as embed_dim // num_heads, so its heads can only go with the hidden size and the engine pins them
(`DependencyGraph.explain()` says so). `split_attention(model)` replaces every such module with a
`SplitMultiheadAttention`: the same computation (outputs equal to float rounding) with separate
q_proj / k_proj / v_proj / out_proj linears and `num_heads` / `head_dim` attributes, the layout
whose heads the engine cuts as units (and, with prune_hidden, whose hidden size it cuts apart from
the heads). `merge_attention(model)` turns them back while no head is cut. A split module also
loads nn.MultiheadAttention's own state_dict keys, so a checkpoint of the original model loads
into the converted one.
"""
import math

import torch
import torch.nn.functional as F

__all__ = ["SplitMultiheadAttention", "split_attention", "merge_attention"]


class SplitMultiheadAttention(torch.nn.Module):
    """nn.MultiheadAttention's forward (masks, dropout, batch_first, returned weights) over separate
    q/k/v projections. Its `num_heads` follows the q rows after a cut; `head_dim` stays."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, kdim=None, vdim=None, batch_first=False,
                 device=None, dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"SplitMultiheadAttention: embed_dim {embed_dim} must be a positive multiple of "
                             f"num_heads {num_heads}")
        kw = {"device": device, "dtype": dtype}
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        # torch's TransformerEncoder(Layer) fast path reads these and would call the packed kernel:
        # 1.13 stops at _qkv_same_embed_dim, 2.x tests in_proj_bias first (None: "bias=False").
        self._qkv_same_embed_dim = False
        self.in_proj_weight = self.in_proj_bias = None
        self.q_proj = torch.nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.k_proj = torch.nn.Linear(kdim or embed_dim, embed_dim, bias=bias, **kw)
        self.v_proj = torch.nn.Linear(vdim or embed_dim, embed_dim, bias=bias, **kw)
        self.out_proj = torch.nn.Linear(embed_dim, embed_dim, bias=bias, **kw)

    @property
    def embed_dim(self):
        return self.out_proj.out_features

    @classmethod
    def from_torch(cls, mha):
        """The split equivalent of one nn.MultiheadAttention (same device, dtype and mode)."""
        w = mha.out_proj.weight
        bias = mha.out_proj.bias is not None
        split = cls(mha.embed_dim, mha.num_heads, mha.dropout, bias, mha.kdim, mha.vdim, mha.batch_first,
                    w.device, w.dtype)
        with torch.no_grad():
            for p, (value, owner) in zip(split.parameters(), _sources(mha)):
                p.copy_(value)
                p.requires_grad_(owner.requires_grad)  # a frozen attention stays frozen
        return split.train(mha.training)

    def to_torch(self, name="attention"):
        """The nn.MultiheadAttention this module equals; refused once heads or widths were cut."""
        e = self.embed_dim
        if self.num_heads * self.head_dim != e or self.q_proj.out_features != e:
            raise ValueError(f"merge_attention: '{name}' has {self.num_heads} heads of {self.head_dim} for embed_dim {e}; "
                             "nn.MultiheadAttention needs num_heads * head_dim == embed_dim, so a module whose heads "
                             "were pruned cannot go back. Fix: keep the SplitMultiheadAttention (its state_dict is "
                             "plain linears) or merge before pruning")
        w = self.out_proj.weight
        bias = self.out_proj.bias is not None
        kdim, vdim = self.k_proj.in_features, self.v_proj.in_features
        mha = torch.nn.MultiheadAttention(e, self.num_heads, self.dropout, bias, kdim=kdim, vdim=vdim,
                                          batch_first=self.batch_first, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                mha.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            else:
                mha.q_proj_weight.copy_(self.q_proj.weight)
                mha.k_proj_weight.copy_(self.k_proj.weight)
                mha.v_proj_weight.copy_(self.v_proj.weight)
            if bias:
                mha.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
                mha.out_proj.bias.copy_(self.out_proj.bias)
            mha.out_proj.weight.copy_(self.out_proj.weight)
        frozen = any(not p.requires_grad for p in self.parameters())
        for p in mha.parameters():
            p.requires_grad_(not frozen)
        return mha.train(self.training)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # nn.MultiheadAttention's keys (packed or separate) become this module's.
        packed, bias = state_dict.pop(prefix + "in_proj_weight", None), state_dict.pop(prefix + "in_proj_bias", None)
        if packed is not None:
            for part, w in zip("qkv", packed.chunk(3)):
                state_dict[f"{prefix}{part}_proj.weight"] = w
        for part in "qkv":
            w = state_dict.pop(f"{prefix}{part}_proj_weight", None)
            if w is not None:
                state_dict[f"{prefix}{part}_proj.weight"] = w
        if bias is not None:
            for part, b in zip("qkv", bias.chunk(3)):
                state_dict[f"{prefix}{part}_proj.bias"] = b
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True):
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        tgt, n = query.shape[0], query.shape[1]
        src = key.shape[0]
        h, d = self.num_heads, self.head_dim

        def heads(x, length):  # (length, n, h * d) -> (n, h, length, d)
            return x.reshape(length, n, h, d).permute(1, 2, 0, 3)

        q = heads(self.q_proj(query), tgt) / math.sqrt(d)
        k, v = heads(self.k_proj(key), src), heads(self.v_proj(value), src)
        scores = torch.matmul(q, k.transpose(-2, -1))
        scores = scores + _additive(attn_mask, scores, n, h, "attn_mask")
        if key_padding_mask is not None:
            scores = scores + _additive(key_padding_mask, scores, n, h, "key_padding_mask").reshape(n, 1, 1, src)
        weights = scores.softmax(-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, p=self.dropout)
        out = torch.matmul(weights, v).permute(2, 0, 1, 3).reshape(tgt, n, h * d)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = weights.mean(1) if average_attn_weights else weights
        return out, (weights if batched else weights.squeeze(0))


def _additive(mask, scores, n, h, what):
    """A boolean (True: not attended) or float mask as a float to add to the scores."""
    if mask is None:
        return torch.zeros((), dtype=scores.dtype, device=scores.device)
    if mask.dtype == torch.uint8:  # torch reads a byte mask as a boolean one (deprecated there)
        mask = mask.bool()
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"SplitMultiheadAttention: {what} must be bool or floating point, got {mask.dtype}")
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill(mask, float("-inf"))
    if what == "attn_mask" and mask.dim() == 3:
        if mask.shape[0] != n * h:
            raise ValueError(f"SplitMultiheadAttention: a 3-d attn_mask has {mask.shape[0]} rows, batch x heads is "
                             f"{n} x {h}; after heads were pruned a per-head mask must be rebuilt for the heads kept. "
                             "Fix: pass a 2-d (target, source) mask or one with batch * num_heads rows")
        mask = mask.reshape(n, h, mask.shape[1], mask.shape[2])
    return mask.to(scores.dtype)


def _sources(mha):
    """For each SplitMultiheadAttention parameter, in parameters() order (q, k, v, out; weight then
    bias): its value in `mha` and the parameter holding that value (packed q/k/v share one)."""
    packed = mha._qkv_same_embed_dim
    weights = mha.in_proj_weight.chunk(3) if packed else (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
    owners = (mha.in_proj_weight,) * 3 if packed else weights
    biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else None
    out = []
    for i in range(3):
        out.append((weights[i], owners[i]))
        if biases is not None:
            out.append((biases[i], mha.in_proj_bias))
    out.append((mha.out_proj.weight, mha.out_proj.weight))
    if mha.out_proj.bias is not None:
        out.append((mha.out_proj.bias, mha.out_proj.bias))
    return out


def _swap(who, model, kind, convert):
    """Replaces every submodule of `kind` by convert(module, name): all converted first, then set,
    so a refusal leaves the model as it was. A module held in several places is converted once and
    stays shared. Returns the names replaced."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{who}: expected an nn.Module, got {type(model).__name__}")
    if isinstance(model, kind):
        raise ValueError(f"{who}: the model itself is a {kind.__name__}; it cannot replace itself. Fix: convert it "
                         f"directly (SplitMultiheadAttention.from_torch / .to_torch) or wrap it in a module")
    found = [(parent, child, f"{pname}.{child}" if pname else child, m)
             for pname, parent in model.named_modules(remove_duplicate=False)
             for child, m in parent._modules.items() if isinstance(m, kind)]
    converted = {}
    for _, _, name, m in found:
        if id(m) not in converted:
            converted[id(m)] = convert(m, name)
    for parent, child, _, m in found:
        setattr(parent, child, converted[id(m)])
    return list(dict.fromkeys(name for _, _, name, _ in found))


def split_attention(model):
    """Replaces every nn.MultiheadAttention in `model` with an equal SplitMultiheadAttention, whose
    heads are pruning units. Call it before creating the optimizer. Returns the names replaced."""
    def convert(mha, name):
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError(f"split_attention: '{name}' uses add_bias_kv or add_zero_attn, which the split module "
                             "does not implement; nothing was converted. Fix: build it without them, or leave its "
                             "heads pinned")
        return SplitMultiheadAttention.from_torch(mha)

    return _swap("split_attention", model, torch.nn.MultiheadAttention, convert)


def merge_attention(model):
    """Turns every SplitMultiheadAttention back into nn.MultiheadAttention (torch's fused kernels and
    checkpoints); refused, with nothing changed, where heads were cut. Returns the names replaced."""
    return _swap("merge_attention", model, SplitMultiheadAttention, lambda m, name: m.to_torch(name))
