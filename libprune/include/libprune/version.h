#pragma once
namespace libprune {
// The library's version, "MAJOR.MINOR.PATCH".
const char* version();
}  // namespace libprune
