#include "cli/flags.h"

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace oclip::cli {

void FlagSet::AddString(const std::string& name, std::string* value, const std::string& help) {
  flags_[name] = {Kind::kString, value, help};
  order_.push_back(name);
}

void FlagSet::AddRepeated(const std::string& name, std::vector<std::string>* values,
                          const std::string& help) {
  flags_[name] = {Kind::kRepeated, values, help};
  order_.push_back(name);
}

void FlagSet::AddInt(const std::string& name, int64_t* value, const std::string& help) {
  flags_[name] = {Kind::kInt, value, help};
  order_.push_back(name);
}

void FlagSet::AddBool(const std::string& name, bool* value, const std::string& help) {
  flags_[name] = {Kind::kBool, value, help};
  order_.push_back(name);
}

absl::Status FlagSet::Set(const std::string& name, const Flag& flag, const std::string& value) {
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.target) = value;
      break;
    case Kind::kRepeated:
      static_cast<std::vector<std::string>*>(flag.target)->push_back(value);
      break;
    case Kind::kInt:
      if (!absl::SimpleAtoi(value, static_cast<int64_t*>(flag.target))) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " expects an integer, got '", value, "'"));
      }
      break;
    case Kind::kBool:
      if (value == "true" || value == "1") {
        *static_cast<bool*>(flag.target) = true;
      } else if (value == "false" || value == "0") {
        *static_cast<bool*>(flag.target) = false;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " expects true or false, got '", value, "'"));
      }
      break;
  }
  return absl::OkStatus();
}

absl::Status FlagSet::Parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_requested_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "' (see oclip ", command_, " --help)"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (see oclip ", command_, " --help)"));
    }
    if (!has_value) {
      if (it->second.kind == Kind::kBool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    absl::Status status = Set(name, it->second, value);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

std::optional<int> FlagSet::ParseCommandLine(int argc, char** argv) {
  if (absl::Status status = Parse(argc, argv); !status.ok()) {
    std::cerr << "oclip " << command_ << ": " << status.message() << "\n";
    return 2;
  }
  if (help_requested_) {
    std::cout << Usage();
    return 0;
  }
  return std::nullopt;
}

std::string FlagSet::Usage() const {
  std::string usage = absl::StrCat("usage: oclip ", command_, " [flags]\n\n", summary_, "\n\nflags:\n");
  for (const std::string& name : order_) {
    const Flag& flag = flags_.at(name);
    std::string spelled = absl::StrCat("  --", name);
    switch (flag.kind) {
      case Kind::kString: absl::StrAppend(&spelled, " VALUE"); break;
      case Kind::kRepeated: absl::StrAppend(&spelled, " VALUE (repeatable)"); break;
      case Kind::kInt: absl::StrAppend(&spelled, " N"); break;
      case Kind::kBool: break;
    }
    if (spelled.size() < 34) spelled.resize(34, ' ');
    absl::StrAppend(&usage, spelled, " ", flag.help, "\n");
  }
  return usage;
}

}  // namespace oclip::cli
