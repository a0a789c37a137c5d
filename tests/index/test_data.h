// Test support for the index tests: temporary directories, and the
// synthetic embeddings of index/synthetic_embeddings.h.

#ifndef OCLIP_TESTS_INDEX_TEST_DATA_H_
#define OCLIP_TESTS_INDEX_TEST_DATA_H_

#include <string>

#include "index/synthetic_embeddings.h"

namespace oclip {
namespace index {

// A fresh directory under the test's temporary directory.
std::string MakeTempDir(const std::string& name);

}  // namespace index
}  // namespace oclip

#endif  // OCLIP_TESTS_INDEX_TEST_DATA_H_
