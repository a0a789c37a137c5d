// Sets an environment variable for the lifetime of the object (tests only:
// the environment is process-wide, so tests using it must not run threads
// that read it meanwhile).

#ifndef OCLIP_TESTS_CORE_SCOPED_ENV_H_
#define OCLIP_TESTS_CORE_SCOPED_ENV_H_

#include <cstdlib>
#include <string>

namespace oclip::testing {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_old_ = old != nullptr;
    if (had_old_) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_old_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_old_ = false;
};

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_CORE_SCOPED_ENV_H_
