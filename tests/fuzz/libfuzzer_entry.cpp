// libFuzzer's entry points for the one target named by LIBPRUNE_FUZZ_NAME (scripts/fuzz.sh).
#include "fuzz.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fuzz::Target target = fuzz::targets().at(LIBPRUNE_FUZZ_NAME);
  target(data, size);
  return 0;
}
