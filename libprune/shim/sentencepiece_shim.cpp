// A C interface to Debian's SentencePiece, built as its own small shared object and loaded by
// libprune with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) (src/data/tokenizer.cpp).
//
// Why: libsentencepiece.so bundles and exports protobuf 3.14, while LibTorch loads the system
// protobuf 3.21 (through libonnx_proto). Linked into one process the usual way, one copy's symbols
// interpose on the other's: the process crashes while loading, or SentencePiece refuses to run
// ("compiled against version 3.14.0"). Loaded privately, each library binds to its own copy.
//
// Strings cross the boundary as char buffers; the caller retries with the size asked for.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

void copy_error(const std::string& message, char* error, size_t capacity) {
  if (!error || capacity == 0) return;
  std::strncpy(error, message.c_str(), capacity - 1);
  error[capacity - 1] = '\0';
}

class Sentences : public sentencepiece::SentenceIterator {
 public:
  Sentences(const char* const* texts, size_t count) : texts_(texts), count_(count) {}
  bool done() const override { return i_ >= count_; }
  void Next() override {
    ++i_;
    if (!done()) value_ = texts_[i_];
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }
  void begin() {
    if (count_) value_ = texts_[0];
  }

 private:
  const char* const* texts_;
  size_t count_;
  size_t i_ = 0;
  std::string value_;
};

}  // namespace

extern "C" {

// Trains a model from `count` texts with the given "key=value" flags; writes the serialized model
// to `model_file`. Returns 0 on success.
int libprune_spm_train(const char* const* texts, size_t count, const char* const* flags, size_t flag_count,
                       const char* model_file, char* error, size_t capacity) try {
  std::unordered_map<std::string, std::string> kwargs;
  for (size_t i = 0; i < flag_count; ++i) {
    const std::string f = flags[i];
    const auto eq = f.find('=');
    kwargs[f.substr(0, eq)] = eq == std::string::npos ? "" : f.substr(eq + 1);
  }
  Sentences sentences(texts, count);
  sentences.begin();
  std::string proto;
  const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs, &sentences, &proto);
  if (!status.ok()) {
    copy_error(status.ToString(), error, capacity);
    return 1;
  }
  FILE* out = std::fopen(model_file, "wb");
  const bool written = out && std::fwrite(proto.data(), 1, proto.size(), out) == proto.size();
  if (out) std::fclose(out);
  if (!written) {
    copy_error("cannot write the model file", error, capacity);
    return 2;
  }
  return 0;
} catch (const std::exception& e) {  // nothing C++ crosses the C boundary
  copy_error(e.what(), error, capacity);
  return 1;
}

void* libprune_spm_load(const char* model_file, char* error, size_t capacity) try {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(model_file);
  if (!status.ok()) {
    copy_error(status.ToString(), error, capacity);
    delete sp;
    return nullptr;
  }
  return sp;
} catch (const std::exception& e) {
  copy_error(e.what(), error, capacity);
  return nullptr;
}

void libprune_spm_free(void* handle) { delete static_cast<sentencepiece::SentencePieceProcessor*>(handle); }

// Piece count, then the pad, unk, bos and eos ids in `special` (4 entries).
int64_t libprune_spm_info(void* handle, int64_t* special) {
  const auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  special[0] = sp->pad_id();
  special[1] = sp->unk_id();
  special[2] = sp->bos_id();
  special[3] = sp->eos_id();
  return sp->GetPieceSize();
}

// Writes up to `capacity` ids; returns how many the text has (call again with more room), or -1
// with `error` set.
int64_t libprune_spm_encode(void* handle, const char* text, int32_t* ids, size_t capacity, char* error,
                            size_t error_capacity) try {
  std::vector<int> out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(text, &out);
  if (!status.ok()) {
    copy_error(status.ToString(), error, error_capacity);
    return -1;
  }
  for (size_t i = 0; i < out.size() && i < capacity; ++i) ids[i] = out[i];
  return static_cast<int64_t>(out.size());
} catch (const std::exception& e) {
  copy_error(e.what(), error, error_capacity);
  return -1;
}

// Writes up to `capacity` bytes (no terminator); returns the text's length, or -1 with `error` set.
int64_t libprune_spm_decode(void* handle, const int32_t* ids, size_t count, char* text, size_t capacity, char* error,
                            size_t error_capacity) try {
  const std::vector<int> pieces(ids, ids + count);
  std::string out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(pieces, &out);
  if (!status.ok()) {
    copy_error(status.ToString(), error, error_capacity);
    return -1;
  }
  std::memcpy(text, out.data(), std::min(capacity, out.size()));
  return static_cast<int64_t>(out.size());
} catch (const std::exception& e) {
  copy_error(e.what(), error, error_capacity);
  return -1;
}
}
