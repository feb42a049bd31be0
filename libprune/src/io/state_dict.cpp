#include "libprune/io/state_dict.h"

#include "libprune/io/file.h"

#include <algorithm>
#include <sstream>

namespace libprune::io {

StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.key()] = b.value();
  return out;
}

StateDict read_state_dict(const std::string& path) {
  const std::vector<char> bytes = read_file(path, "weights file");
  // torch.save has written zip archives since PyTorch 1.6; anything else is truncated, corrupt,
  // or saved with _use_new_zipfile_serialization=False.
  const bool zip = bytes.size() >= 4 && bytes[0] == 'P' && bytes[1] == 'K' && bytes[2] == 3 && bytes[3] == 4;
  TORCH_CHECK_VALUE(zip, "weights file '", path, "' is not a torch.save archive (", bytes.size(),
                    " bytes, no zip header): it is truncated or corrupt. Fix: re-save it from Python with "
                    "torch.save(dict(model.state_dict()), path)");
  check_zip(bytes, path, "weights file", "re-save it from Python with torch.save(dict(model.state_dict()), path)");
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& e) {  // LibTorch's unpickler throws std::runtime_error too
    const std::string what = error_text(e);
    const bool ordered = what.find("OrderedDict") != std::string::npos;
    TORCH_CHECK_VALUE(false, "weights file '", path, "' could not be read: ",
                      ordered ? "it holds an OrderedDict, which LibTorch cannot unpickle"
                              : "it is truncated or corrupt (" + what.substr(0, what.find('\n')) + ")",
                      ". Fix: re-save it from Python with torch.save(dict(model.state_dict()), path)");
  }
  TORCH_CHECK_VALUE(value.isGenericDict(), "weights file '", path, "' holds a ", value.tagKind(),
                    ", not a dict of tensors. Fix: save it with torch.save(dict(model.state_dict()), path)");
  StateDict out;
  for (const auto& kv : value.toGenericDict()) {
    TORCH_CHECK_VALUE(kv.key().isString(), "weights file '", path, "' has a non-string key (", kv.key().tagKind(),
                      "). Fix: save it with torch.save(dict(model.state_dict()), path)");
    const std::string key = kv.key().toStringRef();
    TORCH_CHECK_VALUE(kv.value().isTensor(), "weights file '", path, "': entry '", key, "' is a ",
                      kv.value().tagKind(), ", not a tensor. Fix: save only model.state_dict()");
    out[key] = kv.value().toTensor();
  }
  return out;
}

std::vector<char> serialize_state_dict(const StateDict& state) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& kv : state) dict.insert(kv.first, kv.second.detach().cpu().contiguous());
  return torch::pickle_save(c10::IValue(dict));
}

void write_state_dict(const StateDict& state, const std::string& path) {
  write_file_atomic(path, serialize_state_dict(state), "weights file");
}

void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::string& source) {
  StateDict own = state_dict(module);
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& kv : own) {
    auto it = state.find(kv.first);
    if (it == state.end()) {
      missing.push_back(kv.first);
    } else if (it->second.sizes() != kv.second.sizes()) {
      std::ostringstream s;
      s << kv.first << " (model " << kv.second.sizes() << ", file " << it->second.sizes() << ")";
      mismatched.push_back(s.str());
    }
  }
  for (const auto& kv : state) {
    if (!own.count(kv.first)) unexpected.push_back(kv.first);
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::ostringstream msg;
    msg << source << " does not fit the model (" << module.name() << "):";
    auto list = [&msg](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      msg << "\n  " << keys.size() << " " << what << ":";
      const size_t shown = std::min<size_t>(keys.size(), 20);
      for (size_t i = 0; i < shown; ++i) msg << (i ? ", " : " ") << keys[i];
      if (shown < keys.size()) msg << ", ... (" << keys.size() - shown << " more)";
    };
    list("missing keys", missing);
    list("unexpected keys", unexpected);
    list("shape mismatches", mismatched);
    // Quantization state lives in extensions ("conv1.weight_fake_quant.scale", "conv1.int8.weight").
    const auto quant_key = [](const std::string& k) {
      return k.find("_fake_quant.") != std::string::npos || k.find(".bn_fold.") != std::string::npos ||
             k.find(".int8.") != std::string::npos;
    };
    if (std::any_of(missing.begin(), missing.end(), quant_key) || std::any_of(unexpected.begin(), unexpected.end(), quant_key)) {
      msg << "\nThe differing keys include quantization state: a file saved during QAT loads into a model prepared "
             "the same way (quant::prepare, same placement), a float file into a float model; prepare (or do not) "
             "to match the file.";
    }
    msg << "\nFix: load weights saved from the same architecture (and the same pruning plan), "
           "or build the model that the file was saved from. Nothing was loaded.";
    TORCH_CHECK_VALUE(false, msg.str());
  }
  torch::NoGradGuard no_grad;
  for (auto& kv : own) {
    const auto& src = state.at(kv.first);
    kv.second.copy_(src.to(kv.second.dtype()));
  }
}

void load_state_dict(torch::nn::Module& module, const std::string& path) {
  load_state_dict(module, read_state_dict(path), "weights file '" + path + "'");
}

void save_state_dict(const torch::nn::Module& module, const std::string& path) {
  write_state_dict(state_dict(module), path);
}

}  // namespace libprune::io
