"""A reference BertForSequenceClassification in plain PyTorch with transformers' module tree,
attribute and parameter names (4.x, absolute positions, GELU), written here because transformers
cannot be installed. The C++ models::BertForSequenceClassification must match it: same
state_dict, same logits."""
import json
import math
import os

import torch
from torch import nn


class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"], padding_idx=c["pad_token_id"])
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])
        self.register_buffer("position_ids", torch.arange(c["max_position_embeddings"]).expand((1, -1)), persistent=False)

    def forward(self, input_ids, token_type_ids):
        positions = self.position_ids[:, : input_ids.size(1)]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_attention_heads = c["num_attention_heads"]
        self.attention_head_size = c["hidden_size"] // c["num_attention_heads"]
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(c["hidden_size"], self.all_head_size)
        self.key = nn.Linear(c["hidden_size"], self.all_head_size)
        self.value = nn.Linear(c["hidden_size"], self.all_head_size)
        self.dropout = nn.Dropout(c["attention_probs_dropout_prob"])

    def transpose_for_scores(self, x):
        return x.view(x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)).permute(0, 2, 1, 3)

    def forward(self, hidden, mask):
        q = self.transpose_for_scores(self.query(hidden))
        k = self.transpose_for_scores(self.key(hidden))
        v = self.transpose_for_scores(self.value(hidden))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        if mask is not None:
            scores = scores + mask
        probs = self.dropout(nn.functional.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.size()[:-2] + (self.all_head_size,))


class BertResidual(nn.Module):
    """BertSelfOutput and BertOutput: dense, dropout, LayerNorm(x + residual)."""

    def __init__(self, c, inner):
        super().__init__()
        self.dense = nn.Linear(inner, c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


def _rows_left(heads, n_heads, head_size, already_pruned):
    """transformers' find_pruneable_heads_and_indices: heads are original indices; each is shifted
    down by the pruned heads before it. Returns the heads newly pruned and the rows that stay."""
    heads = set(heads) - already_pruned
    mask = torch.ones(n_heads, head_size)
    for h in heads:
        mask[h - sum(1 for p in already_pruned if p < h)] = 0
    return heads, torch.arange(n_heads * head_size)[mask.view(-1).eq(1)]


def _rebuilt_linear(layer, index, dim=0):
    """transformers' prune_linear_layer: a new nn.Linear holding the chosen rows (dim 0) or columns."""
    weight = layer.weight.index_select(dim, index).detach().clone()
    bias = layer.bias.detach().clone() if dim == 1 else layer.bias[index].detach().clone()
    out = nn.Linear(weight.size(1), weight.size(0))
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


class BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertResidual(c, c["hidden_size"])
        self.pruned_heads = set()

    def prune_heads(self, heads):
        """transformers' BertAttention.prune_heads: the linears are rebuilt without the heads' rows
        (query, key, value) and columns (output.dense)."""
        if not heads:
            return
        s = self.self
        heads, index = _rows_left(heads, s.num_attention_heads, s.attention_head_size, self.pruned_heads)
        s.query, s.key, s.value = (_rebuilt_linear(m, index) for m in (s.query, s.key, s.value))
        self.output.dense = _rebuilt_linear(self.output.dense, index, dim=1)
        s.num_attention_heads -= len(heads)
        s.all_head_size = s.attention_head_size * s.num_attention_heads
        self.pruned_heads |= heads

    def forward(self, hidden, mask):
        return self.output(self.self(hidden, mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x):
        return nn.functional.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertResidual(c, c["intermediate_size"])

    def forward(self, hidden, mask):
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c["num_hidden_layers"])])

    def forward(self, hidden, mask):
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class BertPooler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.activation = nn.Tanh()

    def forward(self, hidden):
        return self.activation(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        if attention_mask is not None:  # transformers' extended mask
            dtype = self.embeddings.word_embeddings.weight.dtype
            mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        return self.pooler(self.encoder(self.embeddings(input_ids, token_type_ids), mask))


class BertForSequenceClassification(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = dict(c)
        self.bert = BertModel(c)
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])
        self.classifier = nn.Linear(c["hidden_size"], c["num_labels"])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.classifier(self.dropout(self.bert(input_ids, attention_mask, token_type_ids)))

    def prune_heads(self, heads_to_prune):
        """transformers' PreTrainedModel.prune_heads: {layer: [original head indices]}."""
        for layer, heads in heads_to_prune.items():
            self.bert.encoder.layer[int(layer)].attention.prune_heads(heads)


def from_pretrained(folder):
    """transformers' from_pretrained for this class: the config's original head count, then
    prune_heads(config.pruned_heads) (JSON keys are strings), then the weights, strictly."""
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    model = BertForSequenceClassification(c)
    model.prune_heads({int(k): v for k, v in c.get("pruned_heads", {}).items()})
    model.load_state_dict(torch.load(os.path.join(folder, "pytorch_model.bin")))
    return model


def config(**overrides):
    c = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=16,
             type_vocab_size=2, layer_norm_eps=1e-12, num_labels=3, pad_token_id=0, hidden_act="gelu",
             model_type="bert")
    c.update(overrides)
    return c
