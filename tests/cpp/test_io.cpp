#include "helpers.h"
#include "libprune/libprune.h"

#include <fstream>

using namespace libprune;

TEST_CASE("state_dict round trip through a file", "[io]") {
  test::TempDir dir("io_roundtrip");
  auto a = models::create("cifar_resnet20", models::ModelOptions().num_classes(10));
  auto b = models::create("cifar_resnet20", models::ModelOptions().num_classes(10));
  io::save_state_dict(*a, dir.file("w.pt"));
  CHECK_FALSE(test::same(test::snapshot(*a), test::snapshot(*b)));
  io::load_state_dict(*b, dir.file("w.pt"));
  CHECK(test::same(test::snapshot(*a), test::snapshot(*b)));
  const auto keys = io::state_dict(*a);
  CHECK(keys.count("layer2.0.downsample.0.weight"));
  CHECK(keys.count("layer2.0.downsample.1.running_mean"));
  CHECK(keys.count("bn1.num_batches_tracked"));
}

TEST_CASE("weights files that are missing, truncated or corrupt give errors naming the file", "[io]") {
  test::TempDir dir("io_bad");
  auto m = models::create("cifar_resnet20", models::ModelOptions().num_classes(10));
  const auto before = test::snapshot(*m);

  const std::string missing = dir.file("nope.pt");
  auto msg = test::message_of([&] { io::load_state_dict(*m, missing); });
  CHECK_THAT(msg, Catch::Contains(missing) && Catch::Contains("does not exist") && Catch::Contains("Fix"));

  io::save_state_dict(*m, dir.file("good.pt"));
  auto bytes = io::read_file(dir.file("good.pt"), "test");
  test::write_bytes(dir.file("truncated.pt"), std::vector<char>(bytes.begin(), bytes.begin() + bytes.size() / 2));
  msg = test::message_of([&] { io::load_state_dict(*m, dir.file("truncated.pt")); });
  CHECK_THAT(msg, Catch::Contains("truncated.pt") && Catch::Contains("truncated or corrupt"));
  CHECK_THAT(msg, Catch::Contains("torch.save(dict(model.state_dict()), path)"));

  test::write_bytes(dir.file("garbage.pt"), std::vector<char>(1000, 'x'));
  msg = test::message_of([&] { io::load_state_dict(*m, dir.file("garbage.pt")); });
  CHECK_THAT(msg, Catch::Contains("garbage.pt") && Catch::Contains("no zip header"));

  // A zip header followed by garbage: gets past the magic check, fails the archive's structure check.
  std::vector<char> fake = {'P', 'K', 3, 4};
  fake.resize(4096, '\x7f');
  test::write_bytes(dir.file("fake.pt"), fake);
  msg = test::message_of([&] { io::load_state_dict(*m, dir.file("fake.pt")); });
  CHECK_THAT(msg, Catch::Contains("fake.pt") && Catch::Contains("no zip end record"));

  msg = test::message_of([&] { io::load_state_dict(*m, dir.path.string()); });
  CHECK_THAT(msg, Catch::Contains("not a regular file"));

  CHECK(test::same(before, test::snapshot(*m)));
}

TEST_CASE("a state_dict from another architecture lists every mismatch and loads nothing", "[io]") {
  test::TempDir dir("io_arch");
  io::save_state_dict(*models::create("resnet18", models::ModelOptions().num_classes(10)), dir.file("r18.pt"));
  auto m = models::create("resnet34", models::ModelOptions().num_classes(100));
  const auto before = test::snapshot(*m);
  const auto msg = test::message_of([&] { io::load_state_dict(*m, dir.file("r18.pt")); });
  CHECK_THAT(msg, Catch::Contains("r18.pt"));
  CHECK_THAT(msg, Catch::Contains("missing keys") && Catch::Contains("layer1.2.conv1.weight"));
  CHECK_THAT(msg, Catch::Contains("shape mismatches") && Catch::Contains("fc.weight"));
  CHECK_THAT(msg, Catch::Contains("Nothing was loaded"));
  CHECK(test::same(before, test::snapshot(*m)));

  auto small = models::create("cifar_resnet20", models::ModelOptions().num_classes(10));
  io::StateDict extra = io::state_dict(*small);
  extra["stray.weight"] = torch::zeros({1});
  const auto msg2 = test::message_of([&] { io::load_state_dict(*small, extra, "extra"); });
  CHECK_THAT(msg2, Catch::Contains("unexpected keys") && Catch::Contains("stray.weight"));
}

TEST_CASE("a failed write leaves the earlier file intact", "[io]") {
  test::TempDir dir("io_atomic");
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  const std::string path = dir.file("w.pt");
  io::save_state_dict(*m, path);
  const auto original = io::read_file(path, "test");
  // Block the temp file's name so the write fails before the rename.
  std::filesystem::create_directories(path + ".tmp-" + std::to_string(::getpid()));
  {
    torch::NoGradGuard no_grad;
    m->fc->weight.add_(1.0);
  }
  const auto msg = test::message_of([&] { io::save_state_dict(*m, path); });
  CHECK_THAT(msg, Catch::Contains("w.pt"));
  CHECK(io::read_file(path, "test") == original);
  CHECK_THAT(test::message_of([&] { io::save_state_dict(*m, dir.file("no/such/dir/w.pt")); }),
             Catch::Contains("cannot write weights file"));
}
