#pragma once
// SentencePiece tokenization for text models (Debian's libsentencepiece): train a model on the
// training split with fixed flags (deterministic), save it next to the run, load it, and encode
// texts as BERT reads them: [CLS] pieces [SEP], at most max_length ids.
//
// Ids 0..3 are [PAD], [UNK], [CLS], [SEP], so a BERT's pad_token_id is 0.
#include "libprune/data/text.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace libprune::data {

// Whether this build has SentencePiece (libsentencepiece-dev when it was configured).
bool have_sentencepiece();

class Tokenizer {
 public:
  static constexpr int64_t kPad = 0, kUnk = 1, kCls = 2, kSep = 3;

  // Trains a unigram model of `vocab_size` pieces on `texts` (one thread, no sampling:
  // the same texts give the same file) and writes `model_file`. Throws naming the problem
  // (too few texts for the vocabulary, an unwritable path, a build without SentencePiece).
  static void train(const std::vector<std::string>& texts, const std::string& model_file, int64_t vocab_size);
  // Loads a model file; throws naming the file.
  explicit Tokenizer(const std::string& model_file);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  int64_t vocab_size() const;
  // [CLS] pieces [SEP]; longer texts are cut to max_length ids (ending in [SEP]) and, when
  // `truncated` is given, counted there.
  std::vector<int64_t> encode(const std::string& text, int64_t max_length, int64_t* truncated = nullptr) const;
  // The pieces of ids (for messages and tests).
  std::string decode(const std::vector<int64_t>& ids) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Encodes a corpus into a TextDataset; `truncated` (when given) gets the count of texts cut.
std::shared_ptr<TextDataset> tokenize(const TextCorpus& corpus, const Tokenizer& tokenizer, int64_t max_length,
                                      int64_t* truncated = nullptr);

}  // namespace libprune::data
