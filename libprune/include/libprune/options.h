#pragma once
// Options defined once. Each options struct (prune::PrunerOptions, schedule::ScheduleOptions,
// train::TrainOptions, report::ReportOptions and the recipe's sections) lists its fields in one X-macro, LIBPRUNE_<NAME>_OPTIONS(X), with one line per
// option:
//
//   X("recipe key", C++ type, field, default, check, "what it means")
//
// That list makes the struct's fields (TORCH_ARG setters and getters, as in torch/nn/options) and a
// table of Spec entries, which drives recipe parsing and validation (with the JSON path), the Python
// keyword arguments and stubs (libprune.PrunerOptions, prune(**options), Schedule(**options)), and
// docs/recipes.md. Adding an option is one line in the list plus the code that uses it.
#include <c10/util/Exception.h>

#include <iterator>
#include <type_traits>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace libprune::options {

// An option's value as a recipe or Python gives it.
using RatioMap = std::vector<std::pair<std::string, double>>;
using Value = std::variant<bool, int64_t, double, std::string, std::vector<std::string>, std::vector<int64_t>, RatioMap>;

enum class Type { Bool, Int, Number, Text, TextList, IntList, RatioMap };
// "a boolean", "an integer", "a number", "a string", "an array of strings", "an array of integers",
// "an object of ratios".
const char* describe(Type type);

// The type tag, and the conversions to and from Value, of each C++ type an option may have.
template <typename T, typename = void>
struct Convert;

template <typename Options>
struct Spec {
  std::string key;  // the recipe key (dotted inside a nested object: "optimizer.lr") and, last part, the Python name
  Type type = Type::Text;
  std::string doc;
  std::function<Value(const Options&)> get;
  // Throws c10::TypeError naming the key when the value has the wrong type, c10::ValueError for an
  // unknown choice.
  std::function<void(Options&, const Value&)> set;
  // "" when the option's value is fine; otherwise what is wrong and the fix ("ratio must be in [0, 1),
  // got 1.5. Fix: ...").
  std::function<std::string(const Options&)> check;
  // The key's last part: the Python keyword.
  std::string name() const { return key.substr(key.rfind('.') + 1); }
};

// A key that was renamed, and its new name (an old recipe or keyword fails with "renamed to X").
struct Renamed {
  const char* old_key;
  const char* new_key;
};

// A check that involves several options: "" or the problem, with the key to report it under.
template <typename Options>
using CrossCheck = std::function<std::string(const Options&, std::string* key)>;

// The first problem among `o`'s options (each spec's check, then `cross`), with its key; "" when none.
template <typename Options>
std::string first_problem(const std::vector<Spec<Options>>& specs, const Options& o, const CrossCheck<Options>& cross,
                          std::string* key) {
  for (const auto& s : specs) {
    std::string problem = s.check ? s.check(o) : std::string();
    if (!problem.empty()) {
      *key = s.key;
      return problem;
    }
  }
  return cross ? cross(o, key) : std::string();
}

// Throws c10::ValueError "<where><problem>" for the first problem among `o`'s options.
template <typename Options>
void validate(const std::vector<Spec<Options>>& specs, const Options& o, const std::string& where,
              const CrossCheck<Options>& cross = {}) {
  std::string key;
  const std::string problem = first_problem(specs, o, cross, &key);
  TORCH_CHECK_VALUE(problem.empty(), where, problem);
}

// The spec of `key` in `specs`, or null.
template <typename Options>
const Spec<Options>* find(const std::vector<Spec<Options>>& specs, const std::string& key) {
  for (const auto& s : specs) {
    if (s.key == key || s.name() == key) return &s;
  }
  return nullptr;
}

// Whether `v` is a whole number that an int64 holds exactly (3.0 is; 3.5 and 1e20 are not).
bool is_whole(double v);

// 0.5 -> "0.5", 1e-05 -> "1e-05": numbers as a person writes them, for messages.
std::string format_number(double v);

// Values of enums that have a name table: E from its name, or an error listing the names.
std::string join(const std::vector<std::string>& names);
template <typename E, size_t N>
E parse_enum(const char* const (&names)[N], const std::string& text, const char* what) {
  for (size_t i = 0; i < N; ++i) {
    if (text == names[i]) return static_cast<E>(i);
  }
  TORCH_CHECK_VALUE(false, "unknown ", what, " \"", text, "\"; expected one of ",
                    join(std::vector<std::string>(std::begin(names), std::end(names))));
  return static_cast<E>(0);
}

// Enums take part in options by declaring their names:
//   template <> struct EnumNames<Reduction> { static constexpr const char* what = "reduction";
//                                             static constexpr const char* names[] = {"sum", ...}; };
template <typename E>
struct EnumNames;

// An enum's value from its name: options::parse<train::Optimizer>("adamw").
template <typename E>
E parse(const std::string& text) {
  return parse_enum<E>(EnumNames<E>::names, text, EnumNames<E>::what);
}
template <typename E>
const char* name_of(E value) {
  return EnumNames<E>::names[static_cast<size_t>(value)];
}

template <>
struct Convert<bool> {
  static constexpr Type type = Type::Bool;
  static Value to(bool v) { return v; }
  static bool from(const Value& v);
};
template <typename T>
struct Convert<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static constexpr Type type = Type::Int;
  static Value to(T v) { return static_cast<int64_t>(v); }
  static T from(const Value& v);
};
template <>
struct Convert<double> {
  static constexpr Type type = Type::Number;
  static Value to(double v) { return v; }
  static double from(const Value& v);
};
template <>
struct Convert<std::string> {
  static constexpr Type type = Type::Text;
  static Value to(const std::string& v) { return v; }
  static std::string from(const Value& v);
};
template <>
struct Convert<std::vector<std::string>> {
  static constexpr Type type = Type::TextList;
  static Value to(const std::vector<std::string>& v) { return v; }
  static std::vector<std::string> from(const Value& v);
};
template <>
struct Convert<std::vector<int64_t>> {
  static constexpr Type type = Type::IntList;
  static Value to(const std::vector<int64_t>& v) { return v; }
  static std::vector<int64_t> from(const Value& v);
};
template <>
struct Convert<RatioMap> {
  static constexpr Type type = Type::RatioMap;
  static Value to(const RatioMap& v) { return v; }
  static RatioMap from(const Value& v);
};
template <typename E>
struct Convert<E, std::enable_if_t<std::is_enum_v<E>>> {
  static constexpr Type type = Type::Text;
  static Value to(E v) { return std::string(name_of(v)); }
  static E from(const Value& v) { return parse<E>(Convert<std::string>::from(v)); }
};

namespace detail {
[[noreturn]] void wrong_type(Type want, const Value& got);
int64_t to_int(const Value& v);
}  // namespace detail

template <typename T>
T Convert<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>>::from(const Value& v) {
  return static_cast<T>(detail::to_int(v));
}

// Checks for option values: each takes the option's name and value and returns "" or the problem
// and its fix as a sentence ("ratio must be in [0, 1), got 1.5. Fix: ...").
namespace check {
using Number = std::function<std::string(const std::string& name, const double& value)>;
Number fraction(const std::string& fix);  // in [0, 1)
Number in_range(double lo, bool lo_open, double hi, bool hi_open, const std::string& fix);
Number positive(const std::string& fix);  // > 0
template <typename T>
std::function<std::string(const std::string&, const T&)> at_least(T lo, const std::string& fix) {
  return [lo, fix](const std::string& name, const T& v) {
    return v >= lo ? std::string()
                   : name + " must be >= " + std::to_string(lo) + ", got " + std::to_string(v) + ". Fix: " + fix;
  };
}
// One of the names `choices()` returns when checked (a registry that grows, such as the criteria).
struct OneOf {
  std::function<std::vector<std::string>()> choices;
  std::string what;
  std::string operator()(const std::string& name, const std::string& value) const;
};
}  // namespace check

// Builds one Spec from an options-list line (see LIBPRUNE_OPTION_SPEC). `check` is nullptr or a
// callable taking the option's name and value (check::OneOf among them).
template <typename Options, typename T, typename Get, typename Set, typename Check>
Spec<Options> make_spec(const char* key, const char* doc, Get get, Set set, Check check) {
  Spec<Options> s;
  s.key = key;
  s.doc = doc;
  s.type = Convert<T>::type;
  s.get = [get](const Options& o) { return Convert<T>::to(get(o)); };
  s.set = [set, name = std::string(key)](Options& o, const Value& v) {
    try {
      set(o, Convert<T>::from(v));
    } catch (const c10::TypeError& e) {
      TORCH_CHECK_TYPE(false, name, ": ", e.what_without_backtrace());
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, name, ": ", e.what_without_backtrace());
    }
  };
  if constexpr (!std::is_same_v<Check, std::nullptr_t>) {
    s.check = [get, check, name = s.name()](const Options& o) { return check(name, get(o)); };
  }
  return s;
}

}  // namespace libprune::options

// An options list's line as a struct field (TORCH_ARG: a setter returning the struct, a getter).
#define LIBPRUNE_OPTION_FIELD(key, type, field, default_value, check_fn, doc) TORCH_ARG(type, field) = default_value;
// Defines Struct::specs(), the list as Spec entries.
#define LIBPRUNE_DEFINE_OPTION_SPECS(Struct, LIST)                                                   \
  const std::vector<::libprune::options::Spec<Struct>>& Struct::specs() {                            \
    using Options = Struct;                                                                          \
    static const std::vector<::libprune::options::Spec<Struct>> list{LIST(LIBPRUNE_OPTION_SPEC)};   \
    return list;                                                                                     \
  }
// The same line as a Spec, inside a function where `Options` names the struct.
#define LIBPRUNE_OPTION_SPEC(key, type, field, default_value, check_fn, doc)                                        \
  ::libprune::options::make_spec<Options, type>(                                                                     \
      key, doc, [](const Options& o) -> const type& { return o.field(); },                                           \
      [](Options& o, type v) { o.field(std::move(v)); }, check_fn),
