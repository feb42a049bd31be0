#pragma once
// Labelled text: corpus readers (WordNet's nouns, a TSV of text and label) and a dataset of token
// ids whose batches are padded to their own longest example, with an attention mask, and bucketed
// by length when training.
#include "libprune/data/dataset.h"

#include <cstdint>
#include <string>
#include <vector>

namespace libprune::data {

struct TextCorpus {
  std::vector<std::string> texts;
  std::vector<int64_t> labels;
  std::vector<std::string> label_names;  // index = label
  int64_t num_classes() const { return static_cast<int64_t>(label_names.size()); }
};

enum class TextSplit { Train, Validation, Test };

// Debian's wordnet-base noun file.
constexpr const char* kWordNetNouns = "/usr/share/wordnet/data.noun";
// WordNet's 26 noun lexicographer files (lex_filenum 03..28), the supersense labels in order.
const std::vector<std::string>& wordnet_noun_supersenses();

// WordNet 3.0 nouns as a classification task: the text is "lemma1, lemma2: definition" (the gloss
// before its quoted examples, underscores as spaces), the label the synset's supersense
// (lex_filenum - 3). Split by synset offset: offset % 10 == 0 test, == 1 validation, else train.
// A missing file, or a record it cannot parse, throws naming the file and the line.
TextCorpus read_wordnet_nouns(const std::string& path, TextSplit split);

// A UTF-8 file of "text<TAB>label" lines; blank lines are skipped. A first line naming both columns
// is a header and sets their order: a text column (text, sentence, review, content, document) and a
// label column (label, labels, class, category, target), in either order ("label\tsentence" too).
// Labels are names: the classes are `label_names` when given (a label outside them is an error
// naming the line), else the distinct names, sorted by value when every one is an integer written
// plainly (labels 0..N-1 are then classes 0..N-1, as in GLUE-style files; "10" is not the third
// name) and as text otherwise.
TextCorpus read_text_tsv(const std::string& path, const std::vector<std::string>& label_names = {});

// Token ids per example (each already [CLS] ... [SEP], at most the model's positions) with labels.
// get() pads a batch to its longest example with `pad_id` and gives input_ids and attention_mask
// (int64 [B, T]). Training batches are bucketed: the epoch's shuffled order is cut into chunks of
// `bucket_batches` batches, each chunk sorted by length, and the batches shuffled again, so a batch
// holds examples of similar length (less padding) and the order still changes every epoch.
class TextDataset : public Dataset {
 public:
  TextDataset(std::vector<std::vector<int64_t>> ids, std::vector<int64_t> labels, int64_t num_classes, int64_t pad_id,
              int64_t bucket_batches = 50);
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  int64_t num_classes() const override { return num_classes_; }
  std::vector<std::string> class_names() const override { return class_names_; }
  // Names the classes (the corpus's label_names); checked against num_classes.
  void set_class_names(std::vector<std::string> names);
  Batch get(const std::vector<int64_t>& indices, bool train, uint64_t seed = 0) override;
  void arrange(std::vector<int64_t>& order, int64_t batch_size, bool train, uint64_t seed) const override;
  int64_t length(int64_t i) const { return static_cast<int64_t>(ids_.at(static_cast<size_t>(i)).size()); }
  // Padded tokens over all tokens when batches of `batch_size` are bucketed or not (for the report).
  double padding_fraction(int64_t batch_size, bool bucketed) const;

 private:
  std::vector<std::vector<int64_t>> ids_;
  std::vector<int64_t> labels_;
  int64_t num_classes_, pad_id_, bucket_batches_;
  std::vector<std::string> class_names_;
};

}  // namespace libprune::data
