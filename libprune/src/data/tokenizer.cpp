#include "libprune/data/tokenizer.h"

#include <dlfcn.h>

#include <array>
#include <cstdlib>
#include <mutex>

namespace libprune::data {
namespace {

// The shim's functions (libprune/shim/sentencepiece_shim.cpp).
struct Shim {
  int (*train)(const char* const*, size_t, const char* const*, size_t, const char*, char*, size_t) = nullptr;
  void* (*load)(const char*, char*, size_t) = nullptr;
  void (*free)(void*) = nullptr;
  int64_t (*info)(void*, int64_t*) = nullptr;
  int64_t (*encode)(void*, const char*, int32_t*, size_t, char*, size_t) = nullptr;
  int64_t (*decode)(void*, const int32_t*, size_t, char*, size_t, char*, size_t) = nullptr;
  std::string problem;  // why it is not there
};

std::string shim_path() {
  if (const char* env = std::getenv("LIBPRUNE_SENTENCEPIECE_SHIM")) return env;
#ifdef LIBPRUNE_SENTENCEPIECE_SHIM
  return LIBPRUNE_SENTENCEPIECE_SHIM;
#else
  return "";
#endif
}

template <typename F>
void bind(void* lib, const char* name, F& fn, std::string& problem) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn && problem.empty()) problem = std::string("the SentencePiece module lacks ") + name;
}

// Loaded once, privately: RTLD_DEEPBIND makes SentencePiece bind to its own protobuf, not LibTorch's.
const Shim& shim() {
  static const Shim loaded = [] {
    Shim s;
    const auto path = shim_path();
    if (path.empty()) {
      s.problem = "libprune was built without SentencePiece. Fix: install libsentencepiece-dev (bash "
                  "scripts/setup.sh) and configure again";
      return s;
    }
    int flags = RTLD_NOW | RTLD_LOCAL;
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    flags |= RTLD_DEEPBIND;  // the sanitizers' runtimes refuse it
#endif
    void* lib = dlopen(path.c_str(), flags);
    // An installed libprune whose build folder is gone: the module by name, from the library path.
    if (!lib && !std::getenv("LIBPRUNE_SENTENCEPIECE_SHIM")) lib = dlopen("libprune_sentencepiece.so", flags);
    if (!lib) {
      const char* why = dlerror();
      s.problem = "cannot load the SentencePiece module \"" + path + "\": " + (why ? why : "") +
                  ". Fix: build libprune (it writes the module) or set LIBPRUNE_SENTENCEPIECE_SHIM to its path";
      return s;
    }
    bind(lib, "libprune_spm_train", s.train, s.problem);
    bind(lib, "libprune_spm_load", s.load, s.problem);
    bind(lib, "libprune_spm_free", s.free, s.problem);
    bind(lib, "libprune_spm_info", s.info, s.problem);
    bind(lib, "libprune_spm_encode", s.encode, s.problem);
    bind(lib, "libprune_spm_decode", s.decode, s.problem);
    return s;
  }();
  TORCH_CHECK_VALUE(loaded.problem.empty(), "Tokenizer: ", loaded.problem);
  return loaded;
}

using ErrorBuffer = std::array<char, 512>;

}  // namespace

bool have_sentencepiece() {
  try {
    shim();
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

struct Tokenizer::Impl {
  void* handle = nullptr;
  int64_t pieces = 0;
  ~Impl() {
    if (handle) shim().free(handle);
  }
};

void Tokenizer::train(const std::vector<std::string>& texts, const std::string& model_file, int64_t vocab_size) {
  const auto& s = shim();
  TORCH_CHECK_VALUE(vocab_size >= 8, "Tokenizer::train: vocab_size must be at least 8 (4 special ids and pieces), got ",
                    vocab_size);
  TORCH_CHECK_VALUE(!texts.empty(), "Tokenizer::train: no texts to train on. Fix: pass the training split");
  // Fixed flags: one thread, every sentence in the given order, so the same texts give the
  // same model; ids 0..3 are BERT's specials.
  const std::vector<std::string> flags = {
      "model_type=unigram", "vocab_size=" + std::to_string(vocab_size), "character_coverage=1.0", "num_threads=1",
      "shuffle_input_sentence=false", "input_sentence_size=0", "pad_id=0", "unk_id=1", "bos_id=2",
      "eos_id=3", "pad_piece=[PAD]", "unk_piece=[UNK]", "bos_piece=[CLS]", "eos_piece=[SEP]", "minloglevel=2"};
  std::vector<const char*> text_ptrs, flag_ptrs;
  for (const auto& t : texts) text_ptrs.push_back(t.c_str());
  for (const auto& f : flags) flag_ptrs.push_back(f.c_str());
  ErrorBuffer error{};
  const int rc = s.train(text_ptrs.data(), text_ptrs.size(), flag_ptrs.data(), flag_ptrs.size(), model_file.c_str(),
                         error.data(), error.size());
  TORCH_CHECK_VALUE(rc != 2, "Tokenizer::train: cannot write \"", model_file, "\". Fix: a writable path");
  TORCH_CHECK_VALUE(rc == 0, "Tokenizer::train: SentencePiece failed: ", error.data(),
                    ". Fix: a smaller vocab_size or more training texts");
}

Tokenizer::Tokenizer(const std::string& model_file) : impl_(std::make_unique<Impl>()) {
  const auto& s = shim();
  ErrorBuffer error{};
  impl_->handle = s.load(model_file.c_str(), error.data(), error.size());
  TORCH_CHECK_VALUE(impl_->handle, "Tokenizer: cannot load the SentencePiece model \"", model_file, "\": ", error.data(),
                    ". Fix: the .model file the run wrote (tokenizer.model)");
  std::array<int64_t, 4> special{};
  impl_->pieces = s.info(impl_->handle, special.data());
  TORCH_CHECK_VALUE(special[0] == kPad && special[2] == kCls && special[3] == kSep, "Tokenizer: \"", model_file,
                    "\" does not use libprune's ids ([PAD] 0, [CLS] 2, [SEP] 3). Fix: train it with Tokenizer::train");
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

int64_t Tokenizer::vocab_size() const { return impl_->pieces; }

std::vector<int64_t> Tokenizer::encode(const std::string& text, int64_t max_length, int64_t* truncated) const {
  TORCH_CHECK_VALUE(max_length >= 3, "Tokenizer::encode: max_length must be at least 3 ([CLS], a piece, [SEP]), got ",
                    max_length);
  std::vector<int32_t> ids(64);
  ErrorBuffer error{};
  int64_t n = shim().encode(impl_->handle, text.c_str(), ids.data(), ids.size(), error.data(), error.size());
  if (n > static_cast<int64_t>(ids.size())) {
    ids.resize(static_cast<size_t>(n));
    n = shim().encode(impl_->handle, text.c_str(), ids.data(), ids.size(), error.data(), error.size());
  }
  TORCH_CHECK_VALUE(n >= 0 && n <= static_cast<int64_t>(ids.size()), "Tokenizer::encode: ", error.data(),
                    " (text: \"", text.substr(0, 60), "\")");
  const auto room = max_length - 2;
  if (n > room && truncated) ++*truncated;
  std::vector<int64_t> out{kCls};
  out.insert(out.end(), ids.begin(), ids.begin() + std::min(room, n));
  out.push_back(kSep);
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  const std::vector<int32_t> pieces(ids.begin(), ids.end());
  std::string text(256, '\0');
  ErrorBuffer error{};
  int64_t n = shim().decode(impl_->handle, pieces.data(), pieces.size(), text.data(), text.size(), error.data(), error.size());
  if (n > static_cast<int64_t>(text.size())) {
    text.resize(static_cast<size_t>(n));
    n = shim().decode(impl_->handle, pieces.data(), pieces.size(), text.data(), text.size(), error.data(), error.size());
  }
  TORCH_CHECK_VALUE(n >= 0 && n <= static_cast<int64_t>(text.size()), "Tokenizer::decode: ", error.data());
  text.resize(static_cast<size_t>(n));
  return text;
}

std::shared_ptr<TextDataset> tokenize(const TextCorpus& corpus, const Tokenizer& tokenizer, int64_t max_length,
                                      int64_t* truncated) {
  TORCH_CHECK_VALUE(!corpus.texts.empty(), "tokenize: the corpus is empty. Fix: check the split and the data path");
  std::vector<std::vector<int64_t>> ids;
  ids.reserve(corpus.texts.size());
  for (const auto& t : corpus.texts) ids.push_back(tokenizer.encode(t, max_length, truncated));
  auto set = std::make_shared<TextDataset>(std::move(ids), corpus.labels, corpus.num_classes(), Tokenizer::kPad);
  set->set_class_names(corpus.label_names);
  return set;
}

}  // namespace libprune::data
