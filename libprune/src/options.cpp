#include "libprune/options.h"

#include <cmath>
#include <sstream>

namespace libprune::options {

const char* describe(Type type) {
  switch (type) {
    case Type::Bool: return "a boolean";
    case Type::Int: return "an integer";
    case Type::Number: return "a number";
    case Type::Text: return "a string";
    case Type::TextList: return "an array of strings";
    case Type::IntList: return "an array of integers";
    case Type::RatioMap: return "an object of ratios";
  }
  return "a value";
}

std::string format_number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

bool is_whole(double v) { return std::floor(v) == v && std::fabs(v) < 9e15; }

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

namespace detail {

namespace {
const char* held(const Value& v) {
  static const Type types[] = {Type::Bool, Type::Int, Type::Number, Type::Text, Type::TextList, Type::IntList, Type::RatioMap};
  return describe(types[v.index()]);
}
}  // namespace

void wrong_type(Type want, const Value& got) {
  TORCH_CHECK_TYPE(false, "expected ", describe(want), ", got ", held(got));
  throw;  // unreachable
}

int64_t to_int(const Value& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  // A whole number written as 3.0 is an integer.
  if (const auto* d = std::get_if<double>(&v); d && is_whole(*d)) {
    return static_cast<int64_t>(*d);
  }
  wrong_type(Type::Int, v);
}

}  // namespace detail

bool Convert<bool>::from(const Value& v) {
  if (const auto* b = std::get_if<bool>(&v)) return *b;
  detail::wrong_type(Type::Bool, v);
}

double Convert<double>::from(const Value& v) {
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  detail::wrong_type(Type::Number, v);
}

std::string Convert<std::string>::from(const Value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  detail::wrong_type(Type::Text, v);
}

std::vector<std::string> Convert<std::vector<std::string>>::from(const Value& v) {
  if (const auto* s = std::get_if<std::vector<std::string>>(&v)) return *s;
  if (const auto* i = std::get_if<std::vector<int64_t>>(&v); i && i->empty()) return {};
  detail::wrong_type(Type::TextList, v);
}

std::vector<int64_t> Convert<std::vector<int64_t>>::from(const Value& v) {
  if (const auto* i = std::get_if<std::vector<int64_t>>(&v)) return *i;
  // An empty array reads as any list type.
  if (const auto* s = std::get_if<std::vector<std::string>>(&v); s && s->empty()) return {};
  detail::wrong_type(Type::IntList, v);
}

RatioMap Convert<RatioMap>::from(const Value& v) {
  if (const auto* m = std::get_if<RatioMap>(&v)) return *m;
  if (const auto* s = std::get_if<std::vector<std::string>>(&v); s && s->empty()) return {};
  if (const auto* i = std::get_if<std::vector<int64_t>>(&v); i && i->empty()) return {};
  detail::wrong_type(Type::RatioMap, v);
}

namespace check {

Number in_range(double lo, bool lo_open, double hi, bool hi_open, const std::string& fix) {
  return [=](const std::string& name, const double& v) {
    const bool ok = (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    if (ok) return std::string();
    return name + " must be in " + std::string(lo_open ? "(" : "[") + format_number(lo) + ", " + format_number(hi) +
           (hi_open ? ")" : "]") + ", got " + format_number(v) + ". Fix: " + fix;
  };
}

Number fraction(const std::string& fix) { return in_range(0, false, 1, true, fix); }

Number positive(const std::string& fix) {
  return [fix](const std::string& name, const double& v) {
    return v > 0 ? std::string() : name + " must be > 0, got " + format_number(v) + ". Fix: " + fix;
  };
}

std::string OneOf::operator()(const std::string&, const std::string& value) const {
  const auto names = choices();
  for (const auto& n : names) {
    if (n == value) return {};
  }
  return "unknown " + what + " \"" + value + "\"; expected one of " + join(names);
}

}  // namespace check

}  // namespace libprune::options
