"""Layer attributes of Python modules after a cut. The rules are C++'s (libprune/layers/metadata.h);
this file only maps torch.nn types and their attribute names onto them, and adds head adapters for
attention modules written elsewhere (Hugging Face, timm)."""
import torch

from . import _libprune

_CONV = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_CONV_T = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
_NORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
         torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)


def _shapes(**tensors):
    return {name: list(t.shape) for name, t in tensors.items() if t is not None}


def _apply(m, kind, current, tensors):
    for name, value in _libprune._layer_attributes(kind, current, tensors).items():
        setattr(m, name, value)


def _linear(m, *names):
    for n in names:
        child = getattr(m, n, None)
        if isinstance(child, torch.nn.Linear):
            return child
    return None


def _hf_heads(m):
    """Hugging Face BERT-style self-attention: query/key/value linears and three attributes.

    Adapters run before the children's own rules, so they read weight shapes, not in/out_features.
    """
    q = _linear(m, "query")
    if q is None or not all(hasattr(m, a) for a in ("num_attention_heads", "attention_head_size", "all_head_size")):
        return False
    a = _libprune._layer_attributes("heads", {"head_dim": m.attention_head_size}, _shapes(q=q.weight))
    m.num_attention_heads, m.all_head_size = a["num_heads"], a["all_head_size"]
    return True


def _timm_heads(m):
    """timm-style Attention: num_heads and head_dim, with a fused qkv linear or q/k/v linears."""
    if not (hasattr(m, "num_heads") and hasattr(m, "head_dim")) or isinstance(m, torch.nn.MultiheadAttention):
        return False
    qkv, q = _linear(m, "qkv"), _linear(m, "q", "q_proj", "query")
    if qkv is None and q is None:
        return False
    tensors = _shapes(qkv=qkv.weight) if qkv is not None else _shapes(q=q.weight)
    m.num_heads = _libprune._layer_attributes("heads", {"head_dim": m.head_dim}, tensors)["num_heads"]
    return True


def _vit_width(m):
    """torchvision VisionTransformer: `hidden_dim` (read by its patch reshape) follows the patch
    projection's filters when the hidden size is cut (prune_hidden)."""
    proj = getattr(m, "conv_proj", None)
    if not (hasattr(m, "hidden_dim") and hasattr(m, "class_token") and isinstance(proj, torch.nn.Conv2d)):
        return False
    m.hidden_dim = proj.weight.shape[0]
    return False  # its children keep their own rules


# Head-count adapters: each takes a module, updates its head attributes from its (already cut)
# linears and returns True, or returns False when the module is not its kind. Whole heads go, so
# the head size stays and the count follows. Add your own with register_head_adapter(). Also
# here: widths a model stores as attributes (_vit_width).
HEAD_ADAPTERS = [_hf_heads, _timm_heads, _vit_width]


def register_head_adapter(fn):
    """Adds `fn(module) -> bool` in front of the built-in head-count adapters."""
    if not callable(fn):
        raise TypeError(f"register_head_adapter: expected a callable, got {type(fn).__name__}")
    HEAD_ADAPTERS.insert(0, fn)
    return fn


def tied_tensors(model):
    """(tensor, dim, reason) for dims whose module code ties them to the hidden size."""
    out = []
    for name, m in model.named_modules():
        prefix = name + "." if name else ""
        if isinstance(m, torch.nn.MultiheadAttention):
            why = (f"heads of nn.MultiheadAttention '{name}': it computes head_dim = embed_dim // num_heads, so its "
                   "heads can go only with the hidden size. Fix: libprune.split_attention(model) replaces it with an "
                   "equal module whose heads are units (or write q/k/v linears and a num_heads attribute)")
            weights = ["in_proj_weight"] if m.in_proj_weight is not None else ["q_proj_weight", "k_proj_weight",
                                                                              "v_proj_weight"]
            out += [(prefix + w, 0, why) for w in weights] + [(prefix + "out_proj.weight", 1, why)]
            # embed_dim is checked against the input and fixes the packed q/k/v rows.
            width = (f"embed_dim of nn.MultiheadAttention '{name}' is checked against its input and fixes its "
                     "packed q/k/v rows, so the width around it stays")
            out += [(prefix + w, 1, width) for w in weights] + [(prefix + "out_proj.weight", 0, width)]
        elif hasattr(m, "num_heads") and not hasattr(m, "head_dim") and _linear(m, "qkv") is not None:
            # torchvision Swin: head_dim = C // num_heads, with C the input (hidden) size.
            why = (f"heads of {type(m).__name__} '{name}': it computes the head size as C // num_heads from the "
                   "hidden size, so its heads can go only with the hidden size")
            out += [(prefix + "qkv.weight", 0, why)]
            if _linear(m, "proj") is not None:
                out.append((prefix + "proj.weight", 1, why))
    return out


def _update(m):
    """One module's attributes from its tensors, by the C++ rule of its kind."""
    if isinstance(m, _CONV + _CONV_T):
        kind = "conv_transpose" if isinstance(m, _CONV_T) else "conv"
        _apply(m, kind, {"groups": m.groups, "in_channels": m.in_channels, "out_channels": m.out_channels},
               _shapes(weight=m.weight))
    elif isinstance(m, _NORM):
        tensors = _shapes(running_mean=m.running_mean, weight=m.weight)
        if tensors:
            _apply(m, "norm", {}, tensors)
    elif isinstance(m, torch.nn.Linear):
        _apply(m, "linear", {}, _shapes(weight=m.weight))
    elif isinstance(m, torch.nn.LayerNorm):
        if m.weight is not None and len(m.normalized_shape) == 1:
            m.normalized_shape = (_libprune._layer_attributes("layer_norm", {}, _shapes(weight=m.weight))["normalized_shape"],)
    elif isinstance(m, torch.nn.GroupNorm):
        if m.weight is not None:
            _apply(m, "group_norm", {}, _shapes(weight=m.weight))
    elif isinstance(m, torch.nn.Embedding):
        _apply(m, "embedding", {}, _shapes(weight=m.weight))
    elif isinstance(m, torch.nn.PReLU):
        _apply(m, "prelu", {}, _shapes(weight=m.weight))


def update_metadata(model):
    """Module attributes follow the (already cut) tensors: head adapters first, then each layer's rule."""
    for m in model.modules():
        for adapter in HEAD_ADAPTERS:
            if adapter(m):
                break
        _update(m)
