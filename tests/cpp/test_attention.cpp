#include "helpers.h"
#include "libprune/libprune.h"
#include "libprune/nn/attention.h"

using namespace libprune;
using prune::Pruner;
using prune::PrunerOptions;

namespace {

// A pre-norm transformer block on tokens, with libprune's attention: embed -> LN -> attention
// -> residual -> MLP -> residual -> head.
struct TinyTransformerImpl : torch::nn::Module {
  torch::nn::Linear embed{nullptr}, fc1{nullptr}, fc2{nullptr}, head{nullptr};
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  nn::MultiheadSelfAttention attn{nullptr};
  TinyTransformerImpl(int64_t dim, int64_t heads) {
    embed = register_module("embed", torch::nn::Linear(6, dim));
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    attn = register_module("attn", nn::MultiheadSelfAttention(dim, heads));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    fc1 = register_module("fc1", torch::nn::Linear(dim, 2 * dim));
    fc2 = register_module("fc2", torch::nn::Linear(2 * dim, dim));
    head = register_module("head", torch::nn::Linear(dim, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = embed->forward(x);
    h = h + attn->forward(ln1->forward(h));
    h = h + fc2->forward(torch::gelu(fc1->forward(ln2->forward(h))));
    return head->forward(h);
  }
};
TORCH_MODULE(TinyTransformer);

graph::Forward forward_of(TinyTransformer m, torch::Tensor x) {
  return [m, x]() mutable { return std::vector<torch::Tensor>{m->forward(x)}; };
}

const graph::Group* group_with(const graph::DependencyGraph& g, const std::string& tensor, int64_t dim) {
  for (const auto& grp : g.groups()) {
    for (const auto& m : grp.members) {
      if (m.tensor == tensor && m.dim == dim) return &grp;
    }
  }
  return nullptr;
}

}  // namespace

TEST_CASE("attention: a head is one unit across q, k, v and out; the hidden size is pinned by default", "[attention]") {
  torch::manual_seed(0);
  TinyTransformer m(16, 4);
  auto x = torch::randn({2, 5, 6});
  Pruner pruner(m.ptr(), forward_of(m, x), PrunerOptions().ratio(0.5).ignored_layers({"head"}));
  const auto g = pruner.graph();
  const auto* heads = group_with(g, "attn.q_proj.weight", 0);
  REQUIRE(heads != nullptr);
  CHECK_FALSE(heads->pinned);
  CHECK(heads->size() == 4);
  // Unit 0 owns rows 0..3 of q, k and v, and columns 0..3 of out_proj.
  for (const char* t : {"attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight", "attn.out_proj.weight"}) {
    const auto it = std::find_if(heads->members.begin(), heads->members.end(), [&](const graph::Member& mem) { return mem.tensor == t; });
    REQUIRE(it != heads->members.end());
    CHECK(heads->unit(0, static_cast<size_t>(it - heads->members.begin())).vec() == std::vector<int64_t>{0, 1, 2, 3});
  }
  const auto* hidden = group_with(g, "ln1.weight", 0);
  REQUIRE(hidden != nullptr);
  CHECK(hidden->hidden);
  CHECK(hidden->pinned);
  CHECK(hidden->reason.find("prune_hidden") != std::string::npos);
  CHECK(group_with(g, "fc1.weight", 0)->pinned == false);
}

TEST_CASE("attention: pruning removes whole heads and updates num_heads; output equals the model with them zeroed",
          "[attention]") {
  torch::manual_seed(1);
  TinyTransformer m(16, 4);
  auto x = torch::randn({2, 5, 6});
  // Reference: the same model with the heads to be removed silenced (v rows and bias zeroed).
  TinyTransformer ref(16, 4);
  {
    torch::NoGradGuard ng;
    for (const auto& kv : m->named_parameters()) ref->named_parameters()[kv.key()].copy_(kv.value());
  }
  Pruner pruner(m.ptr(), forward_of(m, x), PrunerOptions().ratio(0.5).ignored_layers({"head"}));
  const auto plan = pruner.step();
  CHECK(pruner.verification_pins().empty());
  CHECK(m->attn->options.num_heads() == 2);
  CHECK(m->attn->options.head_dim() == 4);
  CHECK(m->attn->q_proj->weight.sizes() == torch::IntArrayRef({8, 16}));
  CHECK(m->attn->out_proj->weight.sizes() == torch::IntArrayRef({16, 8}));
  CHECK(m->fc1->weight.size(0) == 16);
  CHECK(m->embed->weight.size(0) == 16);  // hidden size kept
  const auto* cut = [&]() -> const layers::TensorCut* {
    for (const auto& c : plan.cuts) {
      if (c.tensor == "attn.v_proj.weight") return &c;
    }
    return nullptr;
  }();
  REQUIRE(cut != nullptr);
  REQUIRE(cut->keep.size() == 8);
  // Kept rows come in whole heads of 4.
  for (size_t j = 0; j < cut->keep.size(); j += 4) CHECK(cut->keep[j] % 4 == 0);
  // The MLP is cut too; keep its width in the reference by not touching it: compare the attention only.
  torch::NoGradGuard ng;
  auto keep = torch::tensor(cut->keep, torch::kLong);
  auto mask = torch::ones({16});
  mask.index_fill_(0, keep, 0.0);
  ref->attn->v_proj->weight.mul_((1 - mask).unsqueeze(1));
  ref->attn->v_proj->bias.mul_(1 - mask);
  ref->eval();
  m->eval();
  const auto h = ref->ln1->forward(ref->embed->forward(x));
  CHECK(torch::allclose(m->attn->forward(h), ref->attn->forward(h), 1e-5, 1e-5));
}

TEST_CASE("attention: prune_hidden cuts the embedding dim through LayerNorm and the residual stream", "[attention]") {
  torch::manual_seed(2);
  TinyTransformer m(16, 4);
  auto x = torch::randn({2, 5, 6});
  Pruner pruner(m.ptr(), forward_of(m, x), PrunerOptions().ratio(0.5).ignored_layers({"head"}).prune_hidden(true));
  pruner.step();
  CHECK(m->embed->weight.size(0) == 8);
  CHECK(m->ln1->weight.size(0) == 8);
  CHECK(m->ln1->options.normalized_shape() == std::vector<int64_t>{8});
  CHECK(m->attn->q_proj->weight.size(1) == 8);
  CHECK(m->head->weight.sizes() == torch::IntArrayRef({3, 8}));
  m->eval();
  CHECK(m->forward(x).sizes() == torch::IntArrayRef({2, 5, 3}));
}

TEST_CASE("attention: torch::nn::MultiheadAttention heads are pinned with the reason", "[attention]") {
  struct M : torch::nn::Module {
    torch::nn::Linear in{nullptr}, out{nullptr};
    torch::nn::MultiheadAttention mha{nullptr};
    M() {
      in = register_module("in", torch::nn::Linear(6, 16));
      mha = register_module("mha", torch::nn::MultiheadAttention(16, 4));
      out = register_module("out", torch::nn::Linear(16, 3));
    }
    torch::Tensor forward(const torch::Tensor& x) {
      auto h = in->forward(x);
      return out->forward(std::get<0>(mha->forward(h, h, h)));
    }
  };
  auto m = std::make_shared<M>();
  auto x = torch::randn({5, 2, 6});
  const auto before = test::snapshot(*m);
  Pruner pruner(m, [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; }, PrunerOptions().ratio(0.5).ignored_layers({"out"}));
  const auto g = pruner.graph();
  const auto* heads = group_with(g, "mha.in_proj_weight", 0);
  REQUIRE(heads != nullptr);
  CHECK(heads->pinned);
  CHECK(heads->reason.find("MultiheadAttention \"mha\"") != std::string::npos);
  CHECK(heads->reason.find("Fix:") != std::string::npos);
  const auto* width = group_with(g, "in.weight", 0);
  REQUIRE(width != nullptr);
  CHECK(width->pinned);
  CHECK(width->reason.find("embed_dim") != std::string::npos);
  pruner.step();
  CHECK(test::same(before, test::snapshot(*m)));
  CHECK(pruner.verification_pins().empty());
  torch::NoGradGuard ng;
  CHECK(m->forward(x).sizes() == torch::IntArrayRef({5, 2, 3}));
}

TEST_CASE("attention: bad options give a clear error", "[attention]") {
  const auto msg = test::message_of([] { nn::MultiheadSelfAttention(10, 4); });
  CHECK(msg.find("num_heads") != std::string::npos);
  CHECK(msg.find("Fix:") != std::string::npos);
}
