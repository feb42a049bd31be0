#include "libprune/recipe/recipe.h"

#include "libprune/io/file.h"
#include "libprune/models/registry.h"
#include "schema.h"

#include <cmath>
#include <tuple>
#include <sstream>

namespace libprune::recipe {

std::vector<std::string> model_names() { return models::names(); }

LIBPRUNE_DEFINE_OPTION_SPECS(ModelSection, LIBPRUNE_MODEL_SECTION)

LIBPRUNE_DEFINE_OPTION_SPECS(DataSection, LIBPRUNE_DATA_SECTION)

LIBPRUNE_DEFINE_OPTION_SPECS(StageSection, LIBPRUNE_STAGE_SECTION)

LIBPRUNE_DEFINE_OPTION_SPECS(QuantSection, LIBPRUNE_QUANT_SECTION)

namespace {
using detail::fail;
using detail::json;

// Checks `user` against the schema node (known keys, renamed keys, leaf types) and returns the node
// with the user's values. `pattern` is `path` with array indices as "*" ("pruning.*.ratio").
json merge_into_schema(const json& node, const json& user, const std::string& path, const std::string& pattern,
           const std::string& source) {
  const auto& s = detail::schema();
  auto leaf = s.leaves.find(pattern);
  if (leaf != s.leaves.end()) {
    detail::value_of(user, leaf->second, source, path);
    return user;
  }
  if (pattern == "pruning") {
    if (!user.is_array()) fail(source, path, "expected an array of stages, got " + detail::type_of(user), "write [{...}, ...]");
    json out = json::array();
    for (size_t i = 0; i < user.size(); ++i) out.push_back(merge_into_schema(s.stage, user[i], path + "." + std::to_string(i), "pruning.*", source));
    return out;
  }
  if (!node.is_object()) {
    if (node.type() != user.type()) fail(source, path, "expected " + detail::type_of(node) + ", got " + detail::type_of(user), "write e.g. " + node.dump());
    return user;
  }
  if (!user.is_object()) fail(source, path, "expected an object, got " + detail::type_of(user), "see docs/recipes.md for its keys");
  json out = node;
  for (const auto& [k, v] : user.items()) {
    const std::string sub = path.empty() ? k : path + "." + k;
    if (!node.contains(k)) detail::unknown_key(node, k, sub, pattern, source);
    out[k] = merge_into_schema(node[k], v, sub, pattern.empty() ? k : pattern + "." + k, source);
  }
  return out;
}

// Recipe checks across sections: every stage prunes inside the run.
void check_stages(const Recipe& r, const std::string& source) {
  const auto epochs = static_cast<double>(r.training.epochs());
  for (size_t i = 0; i < r.pruning.size(); ++i) {
    const auto& sc = r.pruning[i].schedule;
    const std::string p = "pruning." + std::to_string(i) + ".schedule.";
    if (sc.start_epoch() >= epochs) {
      fail(source, p + "start_epoch", "must be in [0, training.epochs), got " + options::format_number(sc.start_epoch()),
           "prune at an epoch the run reaches");
    }
    if (sc.kind() == schedule::ScheduleKind::Agp && sc.end_epoch() >= epochs) {
      fail(source, p + "end_epoch", "must be after start_epoch and before training.epochs, got " +
           options::format_number(sc.end_epoch()), "e.g. start_epoch 2, end_epoch 6");
    }
    if (r.pruning[i].pruner.allocation() != prune::Allocation::sensitivity) continue;
    const std::string key = "pruning." + std::to_string(i) + ".allocation";
    if (i > 0) {
      fail(source, key, "allocation sensitivity reads the scan of the dense model, which the first pruning stage takes",
           "use it on pruning.0, or allocation importance here");
    }
    if (r.report.sensitivity_step() <= 0) {
      fail(source, key, "allocation sensitivity divides the cut by a sensitivity scan, and report.sensitivity_step is 0 (no scan)",
           "set report.sensitivity_step, e.g. 0.25");
    }
  }
  // The scan is of the dense model, taken just before the run's first cut: pruning.0 must make it.
  if (r.pruning.empty() || r.pruning[0].pruner.allocation() != prune::Allocation::sensitivity) return;
  const auto first_cut = [&](size_t k) {
    const auto steps = schedule::Schedule(r.pruning[k].schedule).steps();
    return steps.empty() ? epochs : steps.front().first;
  };
  for (size_t k = 1; k < r.pruning.size(); ++k) {
    if (first_cut(k) < first_cut(0)) {
      fail(source, "pruning.0.allocation", "allocation sensitivity reads the scan taken before the run's first cut, "
           "and pruning." + std::to_string(k) + " cuts first (epoch " + options::format_number(first_cut(k)) + ")",
           "make pruning.0 the stage that cuts first");
    }
  }
}

// Quantization inside the run, after the last cut (prune, then quantize), with bits that convert.
void check_quantization(const Recipe& r, const std::string& source) {
  const auto& q = r.quantization;
  if (q.keep_float_worst() > 0) {
    const auto& bits = r.report.quant_sensitivity_bits();
    if (q.mode() != QuantMode::Ptq) {
      fail(source, "quantization.keep_float_worst", std::string("chooses the float units of post-training quantization, and mode is ") +
           options::name_of(q.mode()), "set quantization.mode to ptq (QAT trains past the rounding; name units "
           "in keep_float to keep them float there)");
    }
    if (std::find(bits.begin(), bits.end(), 8) == bits.end()) {
      fail(source, "quantization.keep_float_worst", "ranks units by the quantization scan at 8 bits, and "
           "report.quant_sensitivity_bits has no 8", "set report.quant_sensitivity_bits to [8] (or [8, 4])");
    }
  }
  if (q.mode() == QuantMode::None) return;
  if (q.mode() == QuantMode::Ptq || q.mode() == QuantMode::Qat) {
    if (r.quant.bits() != 8) {
      fail(source, "quantization.bits", "only 8 bits convert to int8 kernels, got " + std::to_string(r.quant.bits()),
           "use 8 (simulated 2 to 7 bits are for quant::prepare from C++ or Python)");
    }
  }
  if (q.simulate_bits() != 0 && (q.mode() != QuantMode::Qat || q.simulate_bits() < 2 || q.simulate_bits() > 7)) {
    fail(source, "quantization.simulate_bits",
         "a simulated low-bit row needs mode qat and 2 to 7 bits, got " + std::to_string(q.simulate_bits()) + " with mode " +
             options::name_of(q.mode()),
         "set quantization.mode to qat and simulate_bits to e.g. 4, or 0 for no such row");
  }
  if (q.mode() != QuantMode::Qat) return;
  const int64_t epochs = r.training.epochs();
  if (q.start_epoch() >= epochs) {
    fail(source, "quantization.start_epoch", "must be below training.epochs (" + std::to_string(epochs) + "), got " +
         std::to_string(q.start_epoch()), "leave at least one epoch of QAT");
  }
  // Observers need an epoch to see the data before their ranges freeze; batch norms may freeze at once.
  for (const auto& [key, at, first] :
       {std::tuple<const char*, int64_t, int64_t>{"freeze_observers_epoch", q.freeze_observers_epoch(), q.start_epoch() + 1},
        {"freeze_bn_epoch", q.freeze_bn_epoch(), q.start_epoch()}}) {
    if (at != -1 && (at < first || at >= epochs)) {
      fail(source, std::string("quantization.") + key, std::string("must be -1 or in ") +
           (first > q.start_epoch() ? "(start_epoch" : "[start_epoch") + ", training.epochs), got " +
           std::to_string(at), "freeze during QAT, e.g. start_epoch + 1");
    }
  }
  if (r.quant.learnable_scales() && q.freeze_observers_epoch() == -1) {
    fail(source, "quantization.learnable_scales", "learned scales start when the observers freeze, and "
         "freeze_observers_epoch is -1 (never)", "set quantization.freeze_observers_epoch, e.g. start_epoch + 1");
  }
  // The pruned row is measured when QAT starts: after at least one epoch of fine-tuning past the last cut.
  for (size_t i = 0; i < r.pruning.size(); ++i) {
    const auto steps = schedule::Schedule(r.pruning[i].schedule).steps();
    const double last = steps.empty() ? 0.0 : steps.back().first;
    if (static_cast<double>(q.start_epoch()) < std::floor(last) + 1) {
      fail(source, "quantization.start_epoch", "QAT starts at epoch " + std::to_string(q.start_epoch()) +
           " but pruning." + std::to_string(i) + " cuts at epoch " + options::format_number(last),
           "prune first, fine-tune, then quantize: start QAT at epoch " + options::format_number(std::floor(last) + 1) +
           " or later");
    }
  }
}

Recipe typed(const json& merged, const std::string& source) {
  Recipe r;
  r.name = merged["name"];
  r.output_dir = merged["output_dir"];
  detail::read_section(merged["model"], "model", source, r.model);
  detail::read_section(merged["data"], "data", source, r.data);
  detail::read_section(merged["training"], "training", source, r.training);
  detail::read_section(merged["report"], "report", source, r.report);
  for (size_t i = 0; i < merged["pruning"].size(); ++i) {
    const auto& stage = merged["pruning"][i];
    const std::string path = "pruning." + std::to_string(i);
    Stage st;
    detail::read_section(stage, path, source, st.pruner);
    detail::read_section(stage, path, source, st.extra);
    st.schedule.ratio(st.pruner.ratio());
    detail::read_section(stage["schedule"], path + ".schedule", source, st.schedule);
    r.pruning.push_back(std::move(st));
  }
  detail::read_section(merged["quantization"], "quantization", source, r.quant);
  detail::read_section(merged["quantization"], "quantization", source, r.quantization);
  check_stages(r, source);
  check_quantization(r, source);
  r.json = merged.dump(2);
  return r;
}

json set_path(json root, const std::string& assignment, const std::string& source) {
  const auto eq = assignment.find('=');
  TORCH_CHECK_VALUE(eq != std::string::npos && eq > 0, "--set \"", assignment,
                    "\" is not key=value. Fix: e.g. --set training.epochs=3 or --set output_dir=runs/x");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  json value;
  try {
    value = json::parse(text);
  } catch (const json::exception&) {
    value = text;  // a plain string
    try {
      (void)value.dump();
    } catch (const json::exception&) {
      TORCH_CHECK_VALUE(false, "--set \"", key, "\": the value is not valid UTF-8. Fix: pass text or JSON");
    }
  }
  json* node = &root;
  for (const auto& part : detail::split_path(key)) {
    if (node->is_array()) {
      size_t idx = 0;
      try {
        idx = std::stoul(part);
      } catch (const std::exception&) {
        fail(source, key, "\"" + part + "\" is not an index into an array", "use a number, e.g. pruning.0.ratio");
      }
      if (idx >= node->size()) fail(source, key, "index " + part + " is past the end", "the recipe has " + std::to_string(node->size()) + " entries");
      node = &(*node)[idx];
    } else {
      if (!node->is_object()) *node = json::object();
      node = &(*node)[part];
    }
  }
  *node = value;
  return root;
}

Recipe parse(const std::string& text, const std::string& source, const std::vector<std::string>& sets) {
  json user;
  try {
    user = json::parse(text);
  } catch (const json::parse_error& e) {
    TORCH_CHECK_VALUE(false, source, " is not valid JSON (", e.what(), "). Fix: check commas, quotes and brackets near byte ",
                      e.byte);
  } catch (const json::exception& e) {  // a number too large for any type, ...
    TORCH_CHECK_VALUE(false, source, " cannot be read (", e.what(), "). Fix: correct the value it names");
  }
  for (const auto& s : sets) user = set_path(user, s, "--set");
  // A stage is cut to a ratio or to a budget; the merged recipe gives every stage a ratio.
  if (user.is_object() && user.contains("pruning") && user["pruning"].is_array()) {
    for (size_t i = 0; i < user["pruning"].size(); ++i) {
      const auto& stage = user["pruning"][i];
      if (stage.is_object() && stage.contains("ratio") && stage.contains("target")) {
        detail::fail(source, "pruning." + std::to_string(i) + ".target", "a stage has a ratio or a target, not both",
                     "drop the ratio (the target's budget sets each layer's width) or the target");
      }
    }
  }
  try {
    return typed(merge_into_schema(detail::schema().defaults, user, "", "", source), source);
  } catch (const json::exception& e) {
    // The typed checks name each key; this is the net under them (a value JSON itself refuses).
    TORCH_CHECK_VALUE(false, source, ": ", e.what(), ". Fix: check the recipe's values against docs/recipes.md");
  }
}

std::string read_text_file(const std::string& path) {
  const auto bytes = io::read_file(path, "recipe");
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

Recipe read_text(const std::string& text, const std::string& source, const std::vector<std::string>& sets) {
  return parse(text, source, sets);
}

Recipe read(const std::string& path, const std::vector<std::string>& sets) { return parse(read_text_file(path), path, sets); }

std::string load_text(const std::string& text, const std::string& source, const std::vector<std::string>& sets) {
  return parse(text, source, sets).json;
}

std::string load(const std::string& path, const std::vector<std::string>& sets) { return read(path, sets).json; }

std::string defaults() { return detail::schema().defaults.dump(2); }

std::string options_markdown() {
  std::ostringstream out;
  out << "| key | default | meaning |\n| --- | --- | --- |\n";
  for (const auto& row : detail::schema().rows) {
    std::string doc;
    for (const char c : row.doc) doc += c == '|' ? std::string("\\|") : std::string(1, c);
    out << "| `" << row.key << "` | `" << row.default_json << "` | " << doc << " |\n";
  }
  return out.str();
}

}  // namespace libprune::recipe
