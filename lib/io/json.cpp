#include "lib/io/json.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace ditgen::io {

nlohmann::json parse_json(const std::string& text, const std::string& what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail("{} is not valid JSON: {}", what, e.what());
  }
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  DITGEN_CHECK(in.good(), "cannot open '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_json(ss.str(), "'" + path + "'");
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool dir_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  return a.back() == '/' ? a + b : a + "/" + b;
}

}  // namespace ditgen::io
