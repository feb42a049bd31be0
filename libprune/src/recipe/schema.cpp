#include "schema.h"

#include <cmath>

namespace libprune::recipe::detail {

void fail(const std::string& source, const std::string& path, const std::string& what, const std::string& fix) {
  TORCH_CHECK_VALUE(false, source, " at ", path.empty() ? "(top level)" : path, ": ", what,
                    fix.empty() ? "" : ". Fix: " + fix);
  throw;  // unreachable
}

void fail_problem(const std::string& source, const std::string& path, const std::string& name,
                  const std::string& problem) {
  // A problem names its option first ("latency_batches.1 must be >= 1"): that word is the path's end.
  const auto space = problem.find(' ');
  const std::string word = problem.substr(0, space);
  if (space != std::string::npos && (word == name || word.rfind(name + ".", 0) == 0)) {
    TORCH_CHECK_VALUE(false, source, " at ", path, word.substr(name.size()), ": ", problem.substr(space + 1));
  }
  TORCH_CHECK_VALUE(false, source, " at ", path, ": ", problem);
  throw;  // unreachable
}

std::string type_of(const json& j) {
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "an array";
  if (j.is_object()) return "an object";
  return "null";
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

json to_json(const options::Value& v) {
  return std::visit(
      [](const auto& x) -> json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, options::RatioMap>) {
          json out = json::object();
          for (const auto& [k, r] : x) out[k] = r;
          return out;
        } else {
          return json(x);
        }
      },
      v);
}

namespace {

bool integral(const json& j) {
  return j.is_number_integer() || (j.is_number_float() && options::is_whole(j.get<double>()));
}

}  // namespace

options::Value value_of(const json& j, options::Type type, const std::string& source, const std::string& path) {
  using options::Type;
  auto wrong = [&](const std::string& want) {
    fail(source, path, "expected " + want + ", got " + type_of(j) + " (" + j.dump() + ")", "write " + want);
  };
  switch (type) {
    case Type::Bool:
      if (!j.is_boolean()) wrong(options::describe(Type::Bool));
      return j.get<bool>();
    case Type::Int:
      if (!j.is_number() || !integral(j)) wrong(j.is_number() ? "an integer" : "a number");
      return static_cast<int64_t>(j.get<double>());
    case Type::Number:
      if (!j.is_number()) wrong(options::describe(Type::Number));
      return j.get<double>();
    case Type::Text:
      if (!j.is_string()) wrong(options::describe(Type::Text));
      return j.get<std::string>();
    case Type::TextList: {
      if (!j.is_array()) wrong(options::describe(Type::TextList));
      std::vector<std::string> out;
      for (size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_string()) fail(source, path + "." + std::to_string(i), "expected a string, got " + type_of(j[i]), "fix the array's element");
        out.push_back(j[i].get<std::string>());
      }
      return out;
    }
    case Type::IntList: {
      if (!j.is_array()) wrong(options::describe(Type::IntList));
      std::vector<int64_t> out;
      for (size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_number() || !integral(j[i])) {
          fail(source, path + "." + std::to_string(i), "expected an integer, got " + type_of(j[i]), "fix the array's element");
        }
        out.push_back(static_cast<int64_t>(j[i].get<double>()));
      }
      return out;
    }
    case Type::RatioMap: {
      if (!j.is_object()) fail(source, path, "expected an object, got " + type_of(j), "write {\"module.name\": 0.3}");
      options::RatioMap out;
      for (const auto& [k, v] : j.items()) {
        if (!v.is_number()) fail(source, path + "." + k, "expected a number, got " + type_of(v), "give a ratio in [0, 1)");
        out.emplace_back(k, v.get<double>());
      }
      return out;
    }
  }
  return {};
}

namespace {

void set_dotted(json& root, const std::string& key, json value) {
  json* node = &root;
  for (const auto& part : split_path(key)) node = &(*node)[part];
  *node = std::move(value);
}

// Adds the options of O under `prefix` (a section) to the schema: defaults, leaf types and doc rows.
template <typename O>
void add_section(Schema& s, json& into, const std::string& prefix, const std::string& doc_prefix,
                 const std::set<std::string>& skip = {}) {
  const O defaults;
  for (const auto& spec : O::specs()) {
    if (skip.count(spec.key)) continue;
    json value = to_json(spec.get(defaults));
    s.rows.push_back({doc_prefix + spec.key, value.dump(), spec.doc});
    set_dotted(into, spec.key, std::move(value));
    s.leaves[prefix + spec.key] = spec.type;
  }
}

Schema make_schema() {
  Schema s;
  s.defaults = {{"name", ""}, {"output_dir", "runs/default"}, {"pruning", json::array()}};
  s.rows.push_back({"name", "\"\"", "shown in the table and summary"});
  add_section<ModelSection>(s, s.defaults["model"], "model.", "model.");
  add_section<DataSection>(s, s.defaults["data"], "data.", "data.");
  add_section<train::TrainOptions>(s, s.defaults["training"], "training.", "training.");
  s.rows.push_back({"pruning", "[]", "pruning stages, each with the keys below"});
  add_section<prune::PrunerOptions>(s, s.stage, "pruning.*.", "pruning.N.");
  add_section<StageSection>(s, s.stage, "pruning.*.", "pruning.N.");
  // The schedule's ratio is the stage's.
  add_section<schedule::ScheduleOptions>(s, s.stage["schedule"], "pruning.*.schedule.", "pruning.N.schedule.", {"ratio"});
  add_section<QuantSection>(s, s.defaults["quantization"], "quantization.", "quantization.");
  add_section<quant::QuantOptions>(s, s.defaults["quantization"], "quantization.", "quantization.");
  add_section<report::ReportOptions>(s, s.defaults["report"], "report.", "report.");
  s.rows.push_back({"output_dir", "\"runs/default\"", "checkpoints, metrics and summary go here"});
  s.renamed["pruning.*"] = prune::PrunerOptions::renamed();
  s.renamed["pruning.*.schedule"] = schedule::ScheduleOptions::renamed();
  return s;
}

}  // namespace

const Schema& schema() {
  static const Schema s = make_schema();
  return s;
}

void unknown_key(const json& node, const std::string& key, const std::string& path, const std::string& pattern,
                 const std::string& source) {
  auto renamed = schema().renamed.find(pattern);
  if (renamed != schema().renamed.end()) {
    for (const auto& r : renamed->second) {
      // Only where the new key lives in this object (the schedule's ratio is the stage's).
      if (key == r.old_key && node.contains(r.new_key)) {
        fail(source, path, "\"" + key + "\" was renamed to \"" + r.new_key + "\"", "write \"" + std::string(r.new_key) + "\"");
      }
    }
  }
  std::vector<std::string> known;
  for (const auto& [k, v] : node.items()) known.push_back(k);
  fail(source, path, "unknown key \"" + key + "\"", "use one of " + options::join(known));
}

}  // namespace libprune::recipe::detail
