#include "libprune/version.h"

namespace libprune {
const char* version() { return LIBPRUNE_VERSION_STRING; }
}  // namespace libprune
