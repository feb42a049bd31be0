#include "libprune/recipe/recipe.h"

#include "libprune/io/file.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace libprune::recipe {
namespace {
using json = nlohmann::json;

// Every key a recipe may hold, with its default. A pruning stage's keys are in kStage.
const char* const kDefaults = R"({
  "name": "",
  "model": {"name": "cifar_resnet20", "num_classes": 0, "in_channels": 0, "weights": ""},
  "data": {"kind": "fashion_mnist", "path": "", "train_dir": "train", "val_dir": "val",
           "crop": 224, "resize": 256, "min_scale": 0.08, "flip": false, "pad_crop": 0,
           "skip_unreadable": true, "threads": 2, "limit_train": 0, "limit_eval": 0,
           "synthetic_size": 32, "synthetic_channels": 3, "synthetic_classes": 10},
  "training": {"epochs": 1, "batch_size": 128, "eval_batch_size": 256,
               "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": false, "weight_decay": 0.0005},
               "lr_schedule": {"name": "cosine", "warmup_epochs": 0, "step_size": 30, "gamma": 0.1,
                               "restarts": [], "restart_scale": 1.0},
               "label_smoothing": 0, "device": "cpu", "seed": 0, "threads": 0, "channels_last": true,
               "max_batches": 0, "bn_l1": 0, "progress": true,
               "retain_freed_memory": true},
  "pruning": [],
  "report": {"latency_runs": 20, "latency_warmup": 5, "latency_threads": 0, "latency_batches": [1, 32],
             "fold_batchnorm": true},
  "output_dir": "runs/default"
})";

const char* const kStage = R"({
  "criterion": "l1", "reduction": "sum", "normalize": false,
  "schedule": {"kind": "one_shot", "start_epoch": 0, "end_epoch": 0, "frequency": 1, "steps": 1, "initial": 0},
  "target_ratio": 0.5, "scope": "local", "ignored": [], "overrides": {}, "round_to": 1, "max_ratio": 1.0,
  "min_channels": 1, "taylor_batches": 16, "prune_hidden": false, "seed": 0
})";

std::string type_of(const json& j) {
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "an array";
  if (j.is_object()) return "an object";
  return "null";
}

[[noreturn]] void fail(const std::string& source, const std::string& path, const std::string& what, const std::string& fix) {
  TORCH_CHECK_VALUE(false, source, " at ", path.empty() ? "(top level)" : path, ": ", what, ". Fix: ", fix);
  throw;  // unreachable
}

// Checks `user` against `schema` (types and known keys) and returns schema with user's values.
json merge(const json& schema, const json& user, const std::string& path, const std::string& source) {
  if (schema.is_object() && path.size() >= 9 && path.compare(path.size() - 9, 9, "overrides") == 0) {
    if (!user.is_object()) fail(source, path, "expected an object, got " + type_of(user), "write {\"module.name\": 0.3}");
    for (const auto& [k, v] : user.items()) {
      if (!v.is_number()) fail(source, path + "." + k, "expected a number, got " + type_of(v), "give a ratio in [0, 1)");
    }
    return user;
  }
  if (schema.is_object()) {
    if (!user.is_object()) fail(source, path, "expected an object, got " + type_of(user), "see docs/recipes.md for its keys");
    json out = schema;
    for (const auto& [k, v] : user.items()) {
      const std::string sub = path.empty() ? k : path + "." + k;
      if (!schema.contains(k)) {
        std::string known;
        for (const auto& [sk, sv] : schema.items()) known += (known.empty() ? "" : ", ") + sk;
        fail(source, sub, "unknown key \"" + k + "\"", "use one of " + known);
      }
      out[k] = merge(schema[k], v, sub, source);
    }
    return out;
  }
  if (path == "pruning") {
    if (!user.is_array()) fail(source, path, "expected an array of stages, got " + type_of(user), "write [{...}, ...]");
    json out = json::array();
    for (size_t i = 0; i < user.size(); ++i) out.push_back(merge(json::parse(kStage), user[i], path + "." + std::to_string(i), source));
    return out;
  }
  if (schema.is_array()) {
    if (!user.is_array()) fail(source, path, "expected an array, got " + type_of(user), "write [ ... ]");
    for (size_t i = 0; i < user.size(); ++i) {
      // Arrays hold the type of their default's elements; restarts (empty by default) holds epochs.
      const bool want_number = (!schema.empty() && schema[0].is_number()) ||
                               (path.size() >= 8 && path.compare(path.size() - 8, 8, "restarts") == 0);
      if (want_number ? !user[i].is_number() : !user[i].is_string()) {
        fail(source, path + "." + std::to_string(i), std::string("expected ") + (want_number ? "a number" : "a string") +
             ", got " + type_of(user[i]), "fix the array's element");
      }
    }
    return user;
  }
  const bool same = (schema.is_number() && user.is_number()) || (schema.is_boolean() && user.is_boolean()) ||
                    (schema.is_string() && user.is_string());
  if (!same) fail(source, path, "expected " + type_of(schema) + ", got " + type_of(user) + " (" + user.dump() + ")",
                  "write " + type_of(schema) + ", e.g. " + schema.dump());
  return user;
}

// "pruning.0.target_ratio" -> {"pruning", "0", "target_ratio"}: the one reader of dotted paths,
// for range checks and for --set.
std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

void check_range(const json& r, const std::string& source) {
  auto num = [&](const std::string& path) {
    const json* j = &r;
    for (const auto& key : split_path(path)) j = j->is_array() ? &j->at(std::stoul(key)) : &j->at(key);
    return j->get<double>();
  };
  auto need = [&](bool ok, const std::string& path, const std::string& what, const std::string& fix) {
    if (!ok) fail(source, path, what + ", got " + json(num(path)).dump(), fix);
  };
  need(num("training.epochs") >= 1, "training.epochs", "must be >= 1", "train at least one epoch");
  need(num("training.batch_size") >= 1, "training.batch_size", "must be >= 1", "e.g. 128");
  need(num("training.optimizer.lr") > 0, "training.optimizer.lr", "must be > 0", "e.g. 0.1 for SGD, 0.001 for AdamW");
  need(num("training.label_smoothing") >= 0 && num("training.label_smoothing") < 1, "training.label_smoothing",
       "must be in [0, 1)", "e.g. 0.1");
  // Checked here, not when the latency is timed: that is after the whole training run.
  need(num("report.latency_runs") >= 1, "report.latency_runs", "must be >= 1", "e.g. 20 (the median of that many timed calls)");
  need(num("report.latency_warmup") >= 0, "report.latency_warmup", "must be >= 0", "e.g. 5");
  need(num("report.latency_threads") >= 0, "report.latency_threads", "must be >= 0",
       "0 times the training threads, then halves them while that is faster; N > 0 times N threads");
  for (size_t i = 0; i < r["report"]["latency_batches"].size(); ++i) {
    const std::string b = "report.latency_batches." + std::to_string(i);
    need(num(b) >= 1, b, "must be >= 1", "batch sizes to time, e.g. [1, 32]");
  }
  const double epochs = num("training.epochs");
  for (size_t i = 0; i < r["pruning"].size(); ++i) {
    const std::string p = "pruning." + std::to_string(i);
    const double target = num(p + ".target_ratio"), max_ratio = num(p + ".max_ratio");
    need(max_ratio > 0 && max_ratio <= 1, p + ".max_ratio", "must be in (0, 1]", "e.g. 0.9");
    need(target >= 0 && target < 1, p + ".target_ratio", "must be in [0, 1)", "e.g. 0.5 removes half of the filters");
    if (target > max_ratio) {
      fail(source, p + ".target_ratio", "ratio " + json(target).dump() + " is above the maximum (max_ratio " +
           json(max_ratio).dump() + ")", "lower target_ratio or raise max_ratio");
    }
    for (const auto& [k, v] : r["pruning"][i]["overrides"].items()) {
      if (v.get<double>() < 0 || v.get<double>() > max_ratio) {
        fail(source, p + ".overrides." + k, "ratio " + v.dump() + " is outside [0, max_ratio " + json(max_ratio).dump() + "]",
             "lower it");
      }
    }
    need(num(p + ".round_to") >= 1, p + ".round_to", "must be >= 1", "e.g. 8 (channel counts a multiple of 8 run fastest)");
    need(num(p + ".schedule.start_epoch") >= 0 && num(p + ".schedule.start_epoch") < epochs, p + ".schedule.start_epoch",
         "must be in [0, training.epochs)", "prune at an epoch the run reaches");
    need(num(p + ".schedule.frequency") > 0, p + ".schedule.frequency", "must be > 0 epochs",
         "e.g. 1 (every epoch) or 0.25 (every quarter of an epoch)");
    const std::string kind = r["pruning"][i]["schedule"]["kind"].get<std::string>();
    if (kind == "agp") {
      need(num(p + ".schedule.end_epoch") > num(p + ".schedule.start_epoch") && num(p + ".schedule.end_epoch") < epochs,
           p + ".schedule.end_epoch", "must be after start_epoch and before training.epochs", "e.g. start_epoch 2, end_epoch 6");
    }
  }
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
  }
  json* node = &root;
  for (const auto& part : split_path(key)) {
    if (node->is_array()) {
      size_t idx = 0;
      try {
        idx = std::stoul(part);
      } catch (const std::exception&) {
        fail(source, key, "\"" + part + "\" is not an index into an array", "use a number, e.g. pruning.0.target_ratio");
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

}  // namespace

std::string defaults() { return json::parse(kDefaults).dump(2); }

std::string load_text(const std::string& text, const std::string& source, const std::vector<std::string>& sets) {
  json user;
  try {
    user = json::parse(text);
  } catch (const json::parse_error& e) {
    TORCH_CHECK_VALUE(false, source, " is not valid JSON (", e.what(), "). Fix: check commas, quotes and brackets near byte ",
                      e.byte);
  }
  for (const auto& s : sets) user = set_path(user, s, "--set");
  json merged = merge(json::parse(kDefaults), user, "", source);
  check_range(merged, source);
  return merged.dump(2);
}

std::string load(const std::string& path, const std::vector<std::string>& sets) {
  const auto bytes = io::read_file(path, "recipe");
  return load_text(std::string(bytes.begin(), bytes.end()), path, sets);
}

}  // namespace libprune::recipe
