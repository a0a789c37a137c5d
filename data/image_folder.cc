#include "data/image_folder.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace oclip {
namespace {

struct Walk {
  const ImageFolderOptions& options;
  std::set<std::pair<dev_t, ino_t>> visited;  // Guards against symlink cycles.
  std::vector<std::string> files;
  std::vector<std::string> errors;
};

void WalkDirectory(const std::string& dir, const std::string& relative, Walk* walk) {
  DIR* handle = ::opendir(dir.c_str());
  if (handle == nullptr) {
    walk->errors.push_back(absl::StrCat("cannot list ", dir, ": ", std::strerror(errno)));
    return;
  }
  std::vector<std::string> names;
  while (dirent* entry = ::readdir(handle)) {
    if (entry->d_name[0] != '.') names.emplace_back(entry->d_name);
  }
  ::closedir(handle);
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(dir, "/", name);
    const std::string child = relative.empty() ? name : absl::StrCat(relative, "/", name);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) continue;  // A dangling link.
    if (S_ISDIR(st.st_mode)) {
      if (walk->visited.insert({st.st_dev, st.st_ino}).second) WalkDirectory(path, child, walk);
    } else if (S_ISREG(st.st_mode)) {
      const std::string extension = LowerExtension(name);
      if (std::find(walk->options.extensions.begin(), walk->options.extensions.end(), extension) !=
          walk->options.extensions.end()) {
        walk->files.push_back(child);
      }
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImageFolderSource>> ImageFolderSource::Create(
    ImageFolderOptions options) {
  if (options.num_workers <= 0 || options.worker_index < 0 ||
      options.worker_index >= options.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat("image folder: worker index ",
                                                   options.worker_index, " is not in [0, ",
                                                   options.num_workers, ")"));
  }
  if (options.extensions.empty()) {
    return absl::InvalidArgumentError("image folder: no image extensions");
  }
  for (std::string& extension : options.extensions) absl::AsciiStrToLower(&extension);
  while (options.root.size() > 1 && options.root.back() == '/') options.root.pop_back();
  struct stat st;
  if (::stat(options.root.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("image folder ", options.root, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("image folder ", options.root, " is not a directory"));
  }
  std::unique_ptr<ImageFolderSource> source(new ImageFolderSource(std::move(options)));
  source->shard_.shard = source->options_.root;
  Walk walk{source->options_, {{st.st_dev, st.st_ino}}, {}, {}};
  WalkDirectory(source->options_.root, "", &walk);
  std::sort(walk.files.begin(), walk.files.end());
  source->files_ = std::move(walk.files);
  for (const std::string& error : walk.errors) {
    source->CountFailure(FailureKind::kUnreadableFile);
    source->warnings_.Warn(error);
  }
  return source;
}

void ImageFolderSource::CountFailure(FailureKind kind) {
  shard_.AddFailure(kind);
  stats_.AddFailure(kind);
}

absl::StatusOr<bool> ImageFolderSource::Next(Sample* sample) {
  while (!done_) {
    if (next_ >= files_.size()) {
      done_ = true;
      stats_.AddShard(shard_);
      return false;
    }
    const size_t index = next_;
    ++next_;
    if (index % static_cast<size_t>(options_.num_workers) !=
        static_cast<size_t>(options_.worker_index)) {
      continue;
    }
    const std::string& relative = files_[index];
    sample->Clear();
    const size_t dot = relative.rfind('.');
    sample->key = relative.substr(0, dot);
    sample->image_extension = LowerExtension(relative);
    sample->image_path = absl::StrCat(options_.root, "/", relative);
    sample->shard = options_.root;
    sample->index_in_shard = static_cast<int64_t>(index);
    if (options_.read_images) {
      absl::Status status = ReadLocalFile(sample->image_path, &sample->image);
      if (!status.ok()) {
        CountFailure(FailureKindForFileError(status));
        warnings_.Warn(std::string(status.message()));
        continue;
      }
    }
    if (options_.read_captions) {
      const std::string sidecar =
          absl::StrCat(options_.root, "/", sample->key, ".", options_.caption_extension);
      absl::Status status = ReadLocalFile(sidecar, &sample->caption);
      if (status.ok()) {
        sample->has_caption = true;
      } else {
        sample->caption.clear();
        if (!absl::IsNotFound(status)) {
          CountFailure(FailureKind::kUnreadableFile);
          warnings_.Warn(std::string(status.message()));
        }
      }
    }
    ++shard_.samples;
    ++stats_.samples;
    return true;
  }
  return false;
}

}  // namespace oclip
