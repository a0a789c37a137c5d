#include "tests/training/synthetic_data.h"

#include <vips/vips.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "core/status.h"

namespace oclip::testing {
namespace {

struct ClassSpec {
  std::string name;    // "red square"
  std::string folder;  // "red_square"
  uint8_t rgb[3];
  bool circle;
};

// The classes in sorted folder order (ImageFolder's class indices).
std::vector<ClassSpec> Classes() {
  const struct {
    const char* name;
    uint8_t rgb[3];
  } colours[] = {{"red", {220, 30, 30}},
                 {"green", {30, 180, 40}},
                 {"blue", {30, 60, 220}},
                 {"yellow", {230, 210, 20}}};
  std::vector<ClassSpec> classes;
  for (const auto& colour : colours) {
    for (bool circle : {false, true}) {
      ClassSpec spec;
      spec.name = absl::StrCat(colour.name, circle ? " circle" : " square");
      spec.folder = absl::StrReplaceAll(spec.name, {{" ", "_"}});
      std::copy_n(colour.rgb, 3, spec.rgb);
      spec.circle = circle;
      classes.push_back(spec);
    }
  }
  std::sort(classes.begin(), classes.end(),
            [](const ClassSpec& a, const ClassSpec& b) { return a.folder < b.folder; });
  return classes;
}

std::string Caption(const ClassSpec& spec) { return absl::StrCat("a photo of a ", spec.name, "."); }

// One image of `spec`: grey noise, then the shape.
std::vector<uint8_t> DrawImage(const ClassSpec& spec, int size, std::mt19937_64& rng) {
  std::vector<uint8_t> pixels(static_cast<size_t>(size) * size * 3);
  std::uniform_int_distribution<int> base_grey(90, 170);
  std::uniform_int_distribution<int> noise(-25, 25);
  const int grey = base_grey(rng);
  for (size_t i = 0; i < pixels.size(); i += 3) {
    const int v = std::clamp(grey + noise(rng), 0, 255);
    pixels[i] = pixels[i + 1] = pixels[i + 2] = static_cast<uint8_t>(v);
  }
  std::uniform_int_distribution<int> extent(size / 4, size / 2);
  const int side = extent(rng);
  std::uniform_int_distribution<int> left(0, size - side), top(0, size - side);
  const int x0 = left(rng), y0 = top(rng);
  std::uniform_int_distribution<int> jitter(-20, 20);
  int rgb[3];
  for (int c = 0; c < 3; ++c) rgb[c] = std::clamp(spec.rgb[c] + jitter(rng), 0, 255);
  const double radius = side / 2.0, cx = x0 + radius, cy = y0 + radius;
  for (int y = y0; y < y0 + side; ++y) {
    for (int x = x0; x < x0 + side; ++x) {
      if (spec.circle) {
        const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
        if (dx * dx + dy * dy > radius * radius) continue;
      }
      uint8_t* p = pixels.data() + (static_cast<size_t>(y) * size + x) * 3;
      for (int c = 0; c < 3; ++c) p[c] = static_cast<uint8_t>(rgb[c]);
    }
  }
  return pixels;
}

absl::Status EnsureVips() {
  static const bool ok = VIPS_INIT("oclip-tests") == 0;
  if (!ok) return absl::InternalError("libvips failed to initialise");
  return absl::OkStatus();
}

// Writes RGB pixels as PNG or JPEG (by the path's suffix) with libvips.
absl::Status SaveImage(const std::vector<uint8_t>& pixels, int size, const std::string& path) {
  OCLIP_RETURN_IF_ERROR(EnsureVips());
  VipsImage* image = vips_image_new_from_memory_copy(pixels.data(), pixels.size(), size, size, 3,
                                                     VIPS_FORMAT_UCHAR);
  if (image == nullptr) return absl::InternalError(absl::StrCat(path, ": ", vips_error_buffer()));
  const bool jpeg = path.size() > 4 && path.substr(path.size() - 4) == ".jpg";
  const int result = jpeg ? vips_jpegsave(image, path.c_str(), "Q", 95, nullptr)
                          : vips_pngsave(image, path.c_str(), nullptr);
  g_object_unref(image);
  if (result != 0) {
    const std::string message = absl::StrCat("writing ", path, ": ", vips_error_buffer());
    vips_error_clear();
    return absl::InternalError(message);
  }
  return absl::OkStatus();
}

absl::Status MakeDirectories(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("creating ", path));
  return absl::OkStatus();
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return ErrnoToStatus(errno, absl::StrCat("writing ", path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SyntheticDataset> WriteSyntheticDataset(const std::string& dir, int train_samples,
                                                       int val_samples, int image_size,
                                                       uint64_t seed) {
  if (train_samples < 1 || val_samples < 1) {
    return absl::InvalidArgumentError("synthetic data set needs at least one sample per split");
  }
  if (image_size < 16) return absl::InvalidArgumentError("synthetic images need image_size >= 16");
  std::error_code ec;
  const std::string root = std::filesystem::absolute(dir, ec).lexically_normal().string();
  if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("resolving ", dir));
  const std::vector<ClassSpec> classes = Classes();
  const int k = static_cast<int>(classes.size());

  SyntheticDataset dataset;
  dataset.csv_path = root + "/train.csv";
  dataset.val_csv_path = root + "/val.csv";
  dataset.imagenet_val_dir = root + "/val";
  dataset.classnames_path = root + "/classnames.txt";
  for (const ClassSpec& spec : classes) dataset.classnames.push_back(spec.name);

  OCLIP_RETURN_IF_ERROR(MakeDirectories(root + "/train"));
  std::mt19937_64 train_rng(seed);
  std::string train_csv = "filepath\ttitle\n";
  for (int i = 0; i < train_samples; ++i) {
    const ClassSpec& spec = classes[i % k];
    const std::string path =
        absl::StrFormat("%s/train/%06d.%s", root, i, i % 2 == 0 ? "jpg" : "png");
    OCLIP_RETURN_IF_ERROR(SaveImage(DrawImage(spec, image_size, train_rng), image_size, path));
    absl::StrAppend(&train_csv, path, "\t", Caption(spec), "\n");
  }
  OCLIP_RETURN_IF_ERROR(WriteText(dataset.csv_path, train_csv));

  for (const ClassSpec& spec : classes) {
    OCLIP_RETURN_IF_ERROR(MakeDirectories(dataset.imagenet_val_dir + "/" + spec.folder));
  }
  // A separate stream: held-out images are not replays of training ones.
  std::mt19937_64 val_rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::string val_csv = "filepath\ttitle\n";
  for (int i = 0; i < val_samples; ++i) {
    const ClassSpec& spec = classes[i % k];
    const std::string path =
        absl::StrFormat("%s/%s/%06d.png", dataset.imagenet_val_dir, spec.folder, i);
    OCLIP_RETURN_IF_ERROR(SaveImage(DrawImage(spec, image_size, val_rng), image_size, path));
    absl::StrAppend(&val_csv, path, "\t", Caption(spec), "\n");
  }
  OCLIP_RETURN_IF_ERROR(WriteText(dataset.val_csv_path, val_csv));

  std::string names;
  for (const std::string& name : dataset.classnames) absl::StrAppend(&names, name, "\n");
  OCLIP_RETURN_IF_ERROR(WriteText(dataset.classnames_path, names));
  return dataset;
}

}  // namespace oclip::testing
