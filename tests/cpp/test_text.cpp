#include "helpers.h"
#include "libprune/libprune.h"

#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

using namespace libprune;
using data::TextSplit;

namespace {

std::string write_file(const std::string& name, const std::string& text) {
  const auto dir = std::filesystem::temp_directory_path() / "libprune_text_test";
  std::filesystem::create_directories(dir);
  const auto path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}

// Three synsets in data.noun's format after a licence line: offsets ending in 0 (test), 1
// (validation) and 2 (train).
const char* kNouns =
    "  1 This software and database is being provided to you, the LICENSEE, by\n"
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 | that which is perceived  \n"
    "00002451 05 n 02 big_cat 0 cat 1 000 | a feline; \"the cat sat\"  \n"
    "00002452 18 n 01 baker 0 001 @ 00001740 n 0000 | someone who bakes  \n";

std::vector<std::string> texts_for_tokenizer() {
  std::vector<std::string> out;
  const std::vector<std::string> words = {"cat", "dog", "entity", "baker", "feline", "bread", "river", "stone"};
  for (size_t i = 0; i < 300; ++i) {
    out.push_back(words[i % 8] + ", " + words[(i * 3 + 1) % 8] + ": a " + words[(i * 5 + 2) % 8] + " that is " +
                  words[(i * 7 + 3) % 8]);
  }
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

TEST_CASE("text: WordNet records become \"lemmas: definition\" with the supersense, split by offset", "[text]") {
  const auto path = write_file("data.noun", kNouns);
  const auto test = data::read_wordnet_nouns(path, TextSplit::Test);
  REQUIRE(test.texts.size() == 1);
  CHECK(test.texts[0] == "entity: that which is perceived");
  CHECK(test.labels[0] == 0);  // lex_filenum 03: noun.Tops
  const auto val = data::read_wordnet_nouns(path, TextSplit::Validation);
  REQUIRE(val.texts.size() == 1);
  CHECK(val.texts[0] == "big cat, cat: a feline");  // underscores as spaces, examples dropped
  CHECK(val.label_names[static_cast<size_t>(val.labels[0])] == "noun.animal");
  const auto train = data::read_wordnet_nouns(path, TextSplit::Train);
  CHECK(train.label_names[static_cast<size_t>(train.labels.at(0))] == "noun.person");
  CHECK(train.num_classes() == 26);
}

TEST_CASE("text: Debian's WordNet nouns give 82,115 synsets over the three splits", "[text]") {
  size_t total = 0;
  std::set<int64_t> labels;
  for (auto split : {TextSplit::Train, TextSplit::Validation, TextSplit::Test}) {
    const auto c = data::read_wordnet_nouns(data::kWordNetNouns, split);
    total += c.texts.size();
    labels.insert(c.labels.begin(), c.labels.end());
    if (split == TextSplit::Test) CHECK((c.texts.size() > 7500 && c.texts.size() < 9000));
  }
  CHECK(total == 82115);
  CHECK(labels.size() == 26);
}

TEST_CASE("text: a malformed or missing corpus is an error naming the file and the line", "[text]") {
  const std::string good = kNouns;
  const auto no_gloss = write_file("no_gloss.noun", good + "00002462 18 n 01 baker 0 000 someone\n");
  CHECK_THROWS_WITH(data::read_wordnet_nouns(no_gloss, TextSplit::Train), Catch::Contains("line 5") && Catch::Contains("gloss"));
  const auto bad_lex = write_file("bad_lex.noun", good + "00002462 31 n 01 baker 0 000 | x\n");
  CHECK_THROWS_WITH(data::read_wordnet_nouns(bad_lex, TextSplit::Train), Catch::Contains("line 5") && Catch::Contains("lex_filenum 31"));
  const auto short_words = write_file("short.noun", good + "00002462 18 n 03 baker 0 000 | x\n");
  CHECK_THROWS_WITH(data::read_wordnet_nouns(short_words, TextSplit::Train), Catch::Contains("fewer words"));
  const auto verb = write_file("verb.noun", good + "00002462 18 v 01 bake 0 000 | x\n");
  CHECK_THROWS_WITH(data::read_wordnet_nouns(verb, TextSplit::Train), Catch::Contains("a noun file"));
  CHECK_THROWS_WITH(data::read_wordnet_nouns("/nonexistent/data.noun", TextSplit::Train),
                    Catch::Contains("cannot open") && Catch::Contains("wordnet-base"));
  const auto empty_split = write_file("only_test.noun", "00001740 03 n 01 entity 0 000 | x\n");
  CHECK_THROWS_WITH(data::read_wordnet_nouns(empty_split, TextSplit::Train), Catch::Contains("no noun records"));
}

TEST_CASE("text: a TSV of text and label, with its bad lines named", "[text]") {
  const auto path = write_file("set.tsv", "text\tlabel\nthe film was great\tpos\n\nawful plot\tneg\r\nfine\tpos\n");
  const auto c = data::read_text_tsv(path);
  CHECK(c.texts == std::vector<std::string>{"the film was great", "awful plot", "fine"});
  CHECK(c.label_names == std::vector<std::string>{"neg", "pos"});
  CHECK(c.labels == std::vector<int64_t>{1, 0, 1});
  const auto with_names = data::read_text_tsv(path, {"pos", "neg"});
  CHECK(with_names.labels == std::vector<int64_t>{0, 1, 0});
  CHECK_THROWS_WITH(data::read_text_tsv(path, {"pos"}), Catch::Contains("line 4") && Catch::Contains("\"neg\""));
  const auto three = write_file("three.tsv", "a\tb\tc\n");
  CHECK_THROWS_WITH(data::read_text_tsv(three), Catch::Contains("line 1 has 3"));
  // A header sets the column order (GLUE-style "label<TAB>sentence"); integer labels are classes by value.
  std::string glue = "Label\tSentence\n";
  for (int i = 0; i < 12; ++i) glue += std::to_string(i) + "\ttext " + std::to_string(i) + "\n";
  const auto g = data::read_text_tsv(write_file("glue.tsv", glue));
  REQUIRE(g.texts.size() == 12);
  CHECK(g.texts[10] == "text 10");
  CHECK(g.labels[10] == 10);
  CHECK(g.label_names[2] == "2");
  const auto sst = data::read_text_tsv(write_file("sst.tsv", "sentence\tlabel\na fine film\t1\nnot good\t0\n"));
  CHECK(sst.texts == std::vector<std::string>{"a fine film", "not good"});
  CHECK(sst.labels == std::vector<int64_t>{1, 0});
  // "01" and "1" are two names, so text order: no two labels compare equal.
  const auto padded = data::read_text_tsv(write_file("padded.tsv", "a\t1\nb\t01\nc\t2\n"));
  CHECK(padded.label_names == std::vector<std::string>{"01", "1", "2"});
  // Without a header a first line is an example, as before.
  CHECK(data::read_text_tsv(write_file("plain.tsv", "good\tpos\nbad\tneg\n")).texts.size() == 2);
}

TEST_CASE("text: batches pad to their longest example with a mask; bucketing cuts the padding", "[text]") {
  std::vector<std::vector<int64_t>> ids;
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < 400; ++i) {
    ids.emplace_back(static_cast<size_t>(3 + (i * 37) % 40), 7);
    labels.push_back(i % 3);
  }
  data::TextDataset set(ids, labels, 3, 0);
  const auto b = set.get({0, 1}, false);
  CHECK(b.inputs.at("input_ids").sizes().vec() == std::vector<int64_t>{2, std::max(set.length(0), set.length(1))});
  CHECK(b.inputs.at("attention_mask").sum().item<int64_t>() == set.length(0) + set.length(1));
  CHECK(b.inputs.at("input_ids").eq(7).sum().item<int64_t>() == set.length(0) + set.length(1));
  CHECK(set.padding_fraction(16, true) < 0.5 * set.padding_fraction(16, false));
  // Bucketing keeps a permutation, and the partial last batch (which drop_last drops) is the
  // shuffled order's tail, not the longest examples.
  std::vector<int64_t> order(400);
  std::iota(order.rbegin(), order.rend(), 0);
  const auto shuffled = order;
  set.arrange(order, 16 * 7, true, 3);
  CHECK(std::vector<int64_t>(order.end() - 400 % 112, order.end()) == std::vector<int64_t>(shuffled.end() - 400 % 112, shuffled.end()));
  std::sort(order.begin(), order.end());
  std::vector<int64_t> all(400);
  std::iota(all.begin(), all.end(), 0);
  CHECK(order == all);
  CHECK_THROWS_WITH(set.padding_fraction(0, true), Catch::Contains("batch_size must be > 0"));
  // The loader's order stays a permutation and changes with the epoch.
  data::Loader loader(set, 16, true, 1);
  std::vector<int64_t> seen[2];
  for (int64_t epoch : {0, 1}) {
    loader.start(epoch);
    data::Batch batch;
    while (loader.next(batch)) seen[epoch].push_back(batch.inputs.at("input_ids").size(1));
  }
  CHECK(seen[0].size() == 25);
  CHECK(seen[0] != seen[1]);
  CHECK_THROWS_WITH(data::TextDataset(ids, std::vector<int64_t>(400, 3), 3, 0), Catch::Contains("label 3"));
}

TEST_CASE("text: SentencePiece trains deterministically and encodes [CLS] pieces [SEP]", "[text]") {
  REQUIRE(data::have_sentencepiece());
  const auto texts = texts_for_tokenizer();
  const auto a = write_file("a.model", ""), b = write_file("b.model", "");
  data::Tokenizer::train(texts, a, 40);
  data::Tokenizer::train(texts, b, 40);
  CHECK(slurp(a) == slurp(b));
  data::Tokenizer tok(a);
  CHECK(tok.vocab_size() == 40);
  const auto ids = tok.encode("cat, dog: a river", 64);
  CHECK(ids.front() == data::Tokenizer::kCls);
  CHECK(ids.back() == data::Tokenizer::kSep);
  CHECK(tok.decode(std::vector<int64_t>(ids.begin() + 1, ids.end() - 1)) == "cat, dog: a river");
  int64_t truncated = 0;
  const auto cut = tok.encode("cat dog entity baker feline bread river stone", 5, &truncated);
  CHECK(cut.size() == 5);
  CHECK(cut.back() == data::Tokenizer::kSep);
  CHECK(truncated == 1);
  const auto set = data::tokenize({texts, std::vector<int64_t>(texts.size(), 0), {"x"}}, tok, 64);
  CHECK(set->size() == 300);
  CHECK_THROWS_WITH(data::Tokenizer(write_file("junk.model", "not a model")), Catch::Contains("junk.model"));
  CHECK_THROWS_WITH(data::Tokenizer::train(texts, write_file("big.model", ""), 100000),
                    Catch::Contains("SentencePiece failed") && Catch::Contains("too high"));
}
