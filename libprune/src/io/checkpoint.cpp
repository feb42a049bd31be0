#include "libprune/io/checkpoint.h"

#include "libprune/io/file.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <sstream>

namespace libprune::io {
namespace {

constexpr const char* kFormat = "libprune.checkpoint/1";

torch::serialize::InputArchive open_archive(const std::string& path) {
  auto bytes = read_file(path, "checkpoint");
  check_zip(bytes, path, "checkpoint", "delete it, or resume from another checkpoint");
  torch::serialize::InputArchive in;
  try {
    std::istringstream stream(std::string(bytes.begin(), bytes.end()));
    in.load_from(stream);
  } catch (const std::exception& e) {
    TORCH_CHECK_VALUE(false, "checkpoint '", path, "' is corrupt or not a libprune checkpoint (", error_text(e),
                      "). Fix: delete it, or resume from another checkpoint");
  }
  return in;
}

}  // namespace

void save_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                     const CheckpointMeta& meta) {
  save_checkpoint(std::vector<std::string>{path}, model, optimizer, meta);
}

void save_checkpoint(const std::vector<std::string>& paths, torch::nn::Module& model,
                     torch::optim::Optimizer& optimizer, const CheckpointMeta& meta) {
  nlohmann::json header = {{"format", kFormat},       {"epoch", meta.epoch},
                           {"recipe_id", meta.recipe_id}, {"plans", nlohmann::json::parse(meta.plans_json)},
                           {"best_top1", meta.best_top1}, {"extra", nlohmann::json::parse(meta.extra_json)}};
  torch::serialize::OutputArchive out, model_archive, optim_archive;
  out.write("meta", c10::IValue(header.dump()));
  model.save(model_archive);
  optimizer.save(optim_archive);
  out.write("model", model_archive);
  out.write("optimizer", optim_archive);
  std::ostringstream stream;
  out.save_to(stream);
  const std::string s = stream.str();
  const std::vector<char> bytes(s.begin(), s.end());
  for (const auto& path : paths) write_file_atomic(path, bytes, "checkpoint");
}

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  auto in = open_archive(path);
  c10::IValue value;
  nlohmann::json header;
  try {
    in.read("meta", value);
    header = nlohmann::json::parse(value.toStringRef());
  } catch (const std::exception& e) {
    TORCH_CHECK_VALUE(false, "checkpoint '", path, "' has no readable libprune header. Fix: it was not written by "
                      "libprune-run; delete it or pass another output_dir");
  }
  const auto format = header.is_object() && header.contains("format") ? header["format"].dump() : "none";
  TORCH_CHECK_VALUE(format == nlohmann::json(kFormat).dump(), "checkpoint '", path, "' has format ", format,
                    ", expected \"", kFormat, "\". Fix: it was not written by this libprune; delete it");
  CheckpointMeta meta;
  try {
    const auto& epoch = header.at("epoch");  // an integer: get<int64_t> would cast a float, out of range too
    const bool fits = epoch.is_number_integer() &&
                      (!epoch.is_number_unsigned() || epoch.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX));
    TORCH_CHECK_VALUE(fits, "checkpoint '", path,
                      "' has a damaged header (epoch ", epoch.dump(), "). Fix: delete it");
    meta.epoch = epoch.get<int64_t>();
    meta.recipe_id = header.at("recipe_id").get<std::string>();
    meta.plans_json = header.at("plans").dump();
    meta.best_top1 = header.at("best_top1").get<double>();
    meta.extra_json = header.at("extra").dump();
    TORCH_CHECK_VALUE(header.at("plans").is_array() && header.at("extra").is_object(), "checkpoint '", path,
                      "' has a damaged header (plans must be an array, extra an object). Fix: delete it");
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK_VALUE(false, "checkpoint '", path, "' has a damaged header (", e.what(), "). Fix: delete it");
  }
  return meta;
}

void load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer) {
  auto in = open_archive(path);
  torch::serialize::InputArchive model_archive, optim_archive;
  // Loading replaces tensors one by one, and the optimizer's state entry by entry; keep the old
  // ones so that a failure leaves both as they were.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> saved;
  for (auto& t : model.parameters()) saved.emplace_back(t, t.detach().clone());
  for (auto& t : model.buffers()) saved.emplace_back(t, t.detach().clone());
  std::ostringstream optimizer_before;
  {
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    archive.save_to(optimizer_before);
  }
  try {
    in.read("model", model_archive);
    in.read("optimizer", optim_archive);
    model.load(model_archive);
    optimizer.load(optim_archive);
  } catch (const std::exception& e) {
    torch::NoGradGuard no_grad;
    for (auto& [t, old] : saved) t.set_data(old);
    try {
      std::istringstream stream(optimizer_before.str());
      torch::serialize::InputArchive archive;
      archive.load_from(stream);
      optimizer.load(archive);
    } catch (const std::exception& again) {
      TORCH_CHECK(false, "checkpoint '", path, "' does not fit, and the optimizer's own state could not be put back (",
                  again.what(), "): rebuild the optimizer before training on");
    }
    TORCH_CHECK_VALUE(false, "checkpoint '", path, "' does not fit this model and optimizer (", error_text(e),
                      "). Fix: resume with the recipe that wrote it, after replaying its plan history");
  }
}

}  // namespace libprune::io
