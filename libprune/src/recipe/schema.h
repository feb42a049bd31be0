#pragma once
// The recipe's schema, made from the option lists: defaults, leaf types, renamed keys and the rows
// of docs/recipes.md; and the readers that turn a merged recipe's sections into options structs,
// naming the file and the JSON path in every error.
#include "libprune/recipe/recipe.h"

#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

namespace libprune::recipe::detail {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& source, const std::string& path, const std::string& what, const std::string& fix);
std::string type_of(const json& j);
// "pruning.0.ratio" -> {"pruning", "0", "ratio"}: the one reader of dotted paths.
std::vector<std::string> split_path(const std::string& path);

json to_json(const options::Value& v);
// The value of `j` as an option of `type`; throws naming `source` and `path` when it is not one.
options::Value value_of(const json& j, options::Type type, const std::string& source, const std::string& path);

struct DocRow {
  std::string key, default_json, doc;
};

struct Schema {
  json defaults;                             // the whole recipe
  json stage;                                // one pruning stage
  std::map<std::string, options::Type> leaves;  // "training.optimizer.lr", "pruning.*.ratio"
  std::map<std::string, std::vector<options::Renamed>> renamed;  // by object pattern: "pruning.*"
  std::vector<DocRow> rows;
};
const Schema& schema();

// Throws: `key` is unknown in the object at `pattern` (and says so when it was renamed).
[[noreturn]] void unknown_key(const json& node, const std::string& key, const std::string& path,
                              const std::string& pattern, const std::string& source);
// The problem with a value, at the recipe's path: "ratio must be ..." reads "at pruning.0.ratio: must be ...".
[[noreturn]] void fail_problem(const std::string& source, const std::string& path, const std::string& name,
                               const std::string& problem);

template <typename O, typename = void>
struct HasProblem : std::false_type {};
template <typename O>
struct HasProblem<O, std::void_t<decltype(std::declval<const O&>().problem(std::declval<std::string*>()))>>
    : std::true_type {};

// Sets `out`'s options from `section` (dotted keys reach nested objects) and checks them.
template <typename O>
void read_section(const json& section, const std::string& path, const std::string& source, O& out) {
  for (const auto& spec : O::specs()) {
    const json* j = &section;
    for (const auto& part : split_path(spec.key)) {
      if (!j->is_object() || !j->contains(part)) {
        j = nullptr;
        break;
      }
      j = &(*j)[part];
    }
    if (!j) continue;  // a key this section leaves to another (the stage's ratio for its schedule)
    const std::string at = path + "." + spec.key;
    try {
      spec.set(out, value_of(*j, spec.type, source, at));
    } catch (const c10::Error& e) {
      const std::string message = e.what_without_backtrace();
      const std::string prefix = spec.key + ": ";
      fail(source, at, message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message,
           "use one of the values listed");
    }
  }
  std::string key;
  std::string problem;
  if constexpr (HasProblem<O>::value) {
    problem = out.problem(&key);
  } else {
    problem = options::first_problem<O>(O::specs(), out, {}, &key);
  }
  if (!problem.empty()) {
    const auto* spec = options::find(O::specs(), key);
    fail_problem(source, path + "." + key, spec ? spec->name() : key.substr(key.rfind('.') + 1), problem);
  }
}

}  // namespace libprune::recipe::detail
