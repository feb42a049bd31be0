#include "libprune/data/text.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

namespace libprune::data {
namespace {

std::ifstream open_text(const std::string& path, const char* what) {
  std::ifstream in(path);
  TORCH_CHECK_VALUE(in.good(), what, ": cannot open \"", path, "\". Fix: check the path",
                    std::string(what) == "WordNet" ? " (Debian's wordnet-base installs /usr/share/wordnet/data.noun)" : "");
  return in;
}

[[noreturn]] void bad_record(const std::string& path, int64_t line, const std::string& why) {
  TORCH_CHECK_VALUE(false, "WordNet: \"", path, "\" line ", line, ": ", why,
                    ". Fix: point data.path at WordNet 3.0's data.noun (wordnet-base)");
}

// One data.noun record: "offset lex_filenum n w_cnt(hex) word lex_id ... p_cnt ptrs... | gloss".
// Returns false for the licence header (lines that start with a space).
bool parse_wordnet_line(const std::string& line, const std::string& path, int64_t number, int64_t& offset,
                        int64_t& label, std::string& text) {
  if (line.empty() || line[0] == ' ') return false;
  const auto bar = line.find(" | ");
  if (bar == std::string::npos) bad_record(path, number, "no \" | \" before the gloss");
  std::istringstream head(line.substr(0, bar));
  std::string offset_s, lex_s, pos, count_s;
  if (!(head >> offset_s >> lex_s >> pos >> count_s)) bad_record(path, number, "fewer than 4 fields before the words");
  try {
    size_t used = 0;
    offset = std::stoll(offset_s, &used);
    if (used != offset_s.size()) throw std::invalid_argument(offset_s);
    const int64_t lex = std::stoll(lex_s, &used);
    if (used != lex_s.size()) throw std::invalid_argument(lex_s);
    label = lex - 3;
    const int64_t words = std::stoll(count_s, &used, 16);
    if (used != count_s.size() || words < 1) throw std::invalid_argument(count_s);
    if (pos != "n") bad_record(path, number, "part of speech \"" + pos + "\", expected \"n\" (a noun file)");
    if (label < 0 || label >= static_cast<int64_t>(wordnet_noun_supersenses().size())) {
      bad_record(path, number, "lex_filenum " + lex_s + " is not a noun file (03..28)");
    }
    text.clear();
    for (int64_t w = 0; w < words; ++w) {
      std::string word, lex_id;
      if (!(head >> word >> lex_id)) bad_record(path, number, "fewer words than its count " + count_s);
      std::replace(word.begin(), word.end(), '_', ' ');
      text += (w ? ", " : "") + word;
    }
  } catch (const std::logic_error& e) {  // stoll's invalid_argument and out_of_range
    bad_record(path, number, std::string("a number field does not parse (") + e.what() + ")");
  }
  std::string gloss = line.substr(bar + 3);
  const auto examples = gloss.find("; \"");
  if (examples != std::string::npos) gloss.resize(examples);
  while (!gloss.empty() && (gloss.back() == ' ' || gloss.back() == '\r')) gloss.pop_back();
  text += ": " + gloss;
  return true;
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1) out.push_back(line.substr(start, tab - start));
  out.push_back(line.substr(start));
  return out;
}

}  // namespace

const std::vector<std::string>& wordnet_noun_supersenses() {
  static const std::vector<std::string> names = {
      "noun.Tops",     "noun.act",      "noun.animal",    "noun.artifact",  "noun.attribute", "noun.body",
      "noun.cognition", "noun.communication", "noun.event", "noun.feeling",   "noun.food",      "noun.group",
      "noun.location", "noun.motive",   "noun.object",    "noun.person",    "noun.phenomenon", "noun.plant",
      "noun.possession", "noun.process", "noun.quantity",  "noun.relation",  "noun.shape",     "noun.state",
      "noun.substance", "noun.time"};
  return names;
}

TextCorpus read_wordnet_nouns(const std::string& path, TextSplit split) {
  auto in = open_text(path, "WordNet");
  TextCorpus corpus;
  corpus.label_names = wordnet_noun_supersenses();
  std::string line, text;
  int64_t number = 0, offset = 0, label = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!parse_wordnet_line(line, path, number, offset, label, text)) continue;
    const int64_t fold = offset % 10;
    const TextSplit of = fold == 0 ? TextSplit::Test : fold == 1 ? TextSplit::Validation : TextSplit::Train;
    if (of != split) continue;
    corpus.texts.push_back(text);
    corpus.labels.push_back(label);
  }
  TORCH_CHECK_VALUE(!corpus.texts.empty(), "WordNet: \"", path, "\" has no noun records for this split (", number,
                    " lines read). Fix: point data.path at WordNet 3.0's data.noun");
  return corpus;
}

namespace {

// The text column of a header line (0 or 1), or -1 when the line is not a header.
int header_text_column(const std::vector<std::string>& fields) {
  if (fields.size() != 2) return -1;
  auto lower = [](std::string v) {
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return v;
  };
  static const std::set<std::string> text{"text", "sentence", "review", "content", "document"};
  static const std::set<std::string> label{"label", "labels", "class", "category", "target"};
  for (int t = 0; t < 2; ++t) {
    if (text.count(lower(fields[static_cast<size_t>(t)])) && label.count(lower(fields[static_cast<size_t>(1 - t)]))) return t;
  }
  return -1;
}

// An integer written the one way std::to_string writes it ("01" and "-0" are names, not numbers,
// so no two labels compare equal).
bool is_integer(const std::string& v) {
  const size_t i = !v.empty() && v[0] == '-' ? 1 : 0;
  const bool digits = i < v.size() && v.size() - i <= 18 &&
                      std::all_of(v.begin() + static_cast<std::ptrdiff_t>(i), v.end(), [](unsigned char ch) { return std::isdigit(ch) != 0; });
  return digits && std::to_string(std::stoll(v)) == v;
}

}  // namespace

TextCorpus read_text_tsv(const std::string& path, const std::vector<std::string>& label_names) {
  auto in = open_text(path, "text TSV");
  std::vector<std::pair<std::string, std::string>> rows;
  std::vector<int64_t> lines;
  std::string line;
  size_t text_column = 0;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const auto fields = split_tabs(line);
    if (rows.empty()) {
      if (const int t = header_text_column(fields); t >= 0) {
        text_column = static_cast<size_t>(t);
        continue;
      }
    }
    TORCH_CHECK_VALUE(fields.size() == 2 && !fields[0].empty() && !fields[1].empty(), "text TSV: \"", path, "\" line ",
                      number, " has ", fields.size(), " tab-separated fields, expected \"text<TAB>label\" (or the ",
                      "order a header line names)");
    rows.emplace_back(fields[text_column], fields[1 - text_column]);
    lines.push_back(number);
  }
  TORCH_CHECK_VALUE(!rows.empty(), "text TSV: \"", path, "\" has no examples. Fix: one \"text<TAB>label\" per line");
  TextCorpus corpus;
  corpus.label_names = label_names;
  if (corpus.label_names.empty()) {
    std::set<std::string> names;
    for (const auto& r : rows) names.insert(r.second);
    corpus.label_names.assign(names.begin(), names.end());
    if (std::all_of(names.begin(), names.end(), is_integer)) {
      std::sort(corpus.label_names.begin(), corpus.label_names.end(),
                [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
    }
  }
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < corpus.label_names.size(); ++i) index[corpus.label_names[i]] = static_cast<int64_t>(i);
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto it = index.find(rows[r].second);
    TORCH_CHECK_VALUE(it != index.end(), "text TSV: \"", path, "\" line ", lines[r], ": label \"", rows[r].second,
                      "\" is not one of the ", corpus.label_names.size(), " classes. Fix: use the training set's labels");
    corpus.texts.push_back(rows[r].first);
    corpus.labels.push_back(it->second);
  }
  return corpus;
}

TextDataset::TextDataset(std::vector<std::vector<int64_t>> ids, std::vector<int64_t> labels, int64_t num_classes,
                         int64_t pad_id, int64_t bucket_batches)
    : ids_(std::move(ids)), labels_(std::move(labels)), num_classes_(num_classes), pad_id_(pad_id), bucket_batches_(bucket_batches) {
  TORCH_CHECK_VALUE(ids_.size() == labels_.size(), "TextDataset: ", ids_.size(), " token lists but ", labels_.size(), " labels");
  TORCH_CHECK_VALUE(bucket_batches_ >= 0, "TextDataset: bucket_batches must be >= 0 (0: no bucketing)");
  for (size_t i = 0; i < labels_.size(); ++i) {
    TORCH_CHECK_VALUE(labels_[i] >= 0 && labels_[i] < num_classes_, "TextDataset: example ", i, " has label ",
                      labels_[i], ", outside 0..", num_classes_ - 1, ". Fix: check the label column against the classes");
    TORCH_CHECK_VALUE(!ids_[i].empty(), "TextDataset: example ", i, " has no tokens. Fix: encode it with [CLS] and [SEP]");
  }
}

void TextDataset::set_class_names(std::vector<std::string> names) {
  TORCH_CHECK_VALUE(names.empty() || static_cast<int64_t>(names.size()) == num_classes_, "TextDataset: ", names.size(),
                    " class names for ", num_classes_, " classes. Fix: give one name per class, in label order");
  class_names_ = std::move(names);
}

Batch TextDataset::get(const std::vector<int64_t>& indices, bool /*train*/, uint64_t /*seed*/) {
  int64_t longest = 0;
  for (int64_t i : indices) longest = std::max(longest, length(i));
  const auto b = static_cast<int64_t>(indices.size());
  auto ids = torch::full({b, longest}, pad_id_, torch::kLong);
  auto mask = torch::zeros({b, longest}, torch::kLong);
  auto y = torch::empty({b}, torch::kLong);
  auto* ip = ids.data_ptr<int64_t>();
  auto* mp = mask.data_ptr<int64_t>();
  for (int64_t r = 0; r < b; ++r) {
    const auto& tokens = ids_.at(static_cast<size_t>(indices[static_cast<size_t>(r)]));
    std::copy(tokens.begin(), tokens.end(), ip + r * longest);
    std::fill(mp + r * longest, mp + r * longest + static_cast<int64_t>(tokens.size()), 1);
    y[r] = labels_[static_cast<size_t>(indices[static_cast<size_t>(r)])];
  }
  return {{{"input_ids", ids}, {"attention_mask", mask}}, y};
}

void TextDataset::arrange(std::vector<int64_t>& order, int64_t batch_size, bool train, uint64_t seed) const {
  TORCH_CHECK_VALUE(batch_size > 0, "TextDataset: batch_size must be > 0, got ", batch_size);
  if (!train || bucket_batches_ == 0) return;
  auto by_length = [this](int64_t a, int64_t b) { return length(a) < length(b); };
  // The leftover (a partial last batch, which drop_last drops) is set aside before sorting, so it is
  // a random draw rather than the longest examples of the last chunk.
  const size_t full = order.size() / static_cast<size_t>(batch_size);
  const size_t sorted = full * static_cast<size_t>(batch_size);
  const auto chunk = static_cast<size_t>(bucket_batches_ * batch_size);
  for (size_t start = 0; start < sorted; start += chunk) {
    const auto end = order.begin() + static_cast<long>(std::min(sorted, start + chunk));
    std::stable_sort(order.begin() + static_cast<long>(start), end, by_length);
  }
  // Shuffle whole batches; the leftover stays last.
  std::vector<size_t> batches(full);
  std::iota(batches.begin(), batches.end(), 0);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::shuffle(batches.begin(), batches.end(), rng);
  std::vector<int64_t> out;
  out.reserve(order.size());
  for (size_t b : batches) {
    const auto first = order.begin() + static_cast<long>(b * static_cast<size_t>(batch_size));
    out.insert(out.end(), first, first + batch_size);
  }
  out.insert(out.end(), order.begin() + static_cast<long>(full * static_cast<size_t>(batch_size)), order.end());
  order = std::move(out);
}

double TextDataset::padding_fraction(int64_t batch_size, bool bucketed) const {
  TORCH_CHECK_VALUE(batch_size > 0, "TextDataset: batch_size must be > 0, got ", batch_size);
  std::vector<int64_t> order(static_cast<size_t>(size()));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(0);
  std::shuffle(order.begin(), order.end(), rng);
  if (bucketed) arrange(order, batch_size, true, 0);
  int64_t padded = 0, total = 0;
  for (size_t start = 0; start < order.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(batch_size));
    int64_t longest = 0;
    for (size_t i = start; i < end; ++i) longest = std::max(longest, length(order[i]));
    for (size_t i = start; i < end; ++i) padded += longest - length(order[i]);
    total += longest * static_cast<int64_t>(end - start);
  }
  return total ? static_cast<double>(padded) / static_cast<double>(total) : 0.0;
}

}  // namespace libprune::data
