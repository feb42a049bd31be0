"""Layer kinds beyond the zoo: group norm, transposed conv, PReLU, embeddings, linear on tokens."""
import torch

import libprune


class Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.gn = torch.nn.GroupNorm(4, 16)
        self.act = torch.nn.PReLU(16)
        self.up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = torch.nn.Conv2d(8, 5, 1)

    def forward(self, x):
        return self.head(self.up(self.act(self.gn(self.conv(x)))))


class Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 12)
        self.norm = torch.nn.LayerNorm(12)
        self.fc1 = torch.nn.Linear(12, 32)
        self.fc2 = torch.nn.Linear(32, 12)
        self.out = torch.nn.Linear(12, 3)

    def forward(self, ids):  # ids: [batch, tokens]
        h = self.norm(self.emb(ids))
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.out(h.mean(1))


def _member_group(graph, tensor, dim):
    return next(g for g in graph.groups if (tensor, dim) in g.members)


def test_group_norm_prelu_and_transposed_conv_prune_together():
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    graph = libprune.DependencyGraph(model, x)
    g = _member_group(graph, "conv.weight", 0)
    assert not g.pinned
    assert {("gn.weight", 0), ("act.weight", 0), ("up.weight", 0)} <= set(g.members)
    assert g.size == 4  # 16 channels in 4 norm groups: one unit per index inside a group
    up = _member_group(graph, "up.weight", 1)
    assert ("head.weight", 1) in up.members and not up.pinned
    libprune.prune(model, x, ratio=0.5, ignored_layers=[model.head])
    assert model.conv.out_channels == 8 and model.gn.num_channels == 8 and model.gn.num_groups == 4
    assert model.act.num_parameters == 8 and model.up.in_channels == 8 and model.up.out_channels == 4
    assert model.head.in_channels == 4
    with torch.no_grad():
        assert model(x).shape == (2, 5, 16, 16)


def test_embedding_layernorm_and_token_linears():
    torch.manual_seed(0)
    model = Tokens().eval()
    ids = torch.randint(0, 50, (2, 7))
    graph = libprune.DependencyGraph(model, ids)
    hidden = _member_group(graph, "fc1.weight", 0)
    assert not hidden.pinned and hidden.size == 32
    assert ("fc2.weight", 1) in hidden.members
    stream = _member_group(graph, "emb.weight", 1)
    assert {("norm.weight", 0), ("fc1.weight", 1), ("fc2.weight", 0), ("out.weight", 1)} <= set(stream.members)
    libprune.prune(model, ids, ratio=0.5, ignored_layers=[model.out])
    assert model.fc1.out_features == 16 and model.fc2.in_features == 16
    assert model.emb.embedding_dim == 6 and model.norm.normalized_shape == (6,)
    with torch.no_grad():
        assert model(ids).shape == (2, 3)
