#include "lib/io/json.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "lib/io/printable.h"

namespace ditgen::io {

namespace {

// The key path of the value being parsed ("weight_map", "layers[3].type"), for messages.
std::string path_text(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) {
    if (!s.empty() && (p.empty() || p[0] != '[')) s += '.';
    s += p;
    if (s.size() > 120) return printable(s.substr(0, 117)) + "...";
  }
  return printable(s);
}

// One pass over the text that builds the document as nlohmann's own DOM parser does, and refuses
// nesting deeper than kMaxJsonDepth, a key repeated in one object, and numbers beyond a double's range
// (nlohmann would keep them as inf). Nothing downstream (copies, dump(), destructors) then ever recurses
// deeper than the limit. Linear in the text's size: a repeated key is found by the object's own lookup,
// and nothing is parsed twice.
class StrictParser final : public nlohmann::json_sax<nlohmann::json> {
 public:
  StrictParser(const std::string& what, const DuplicateKeyText& duplicate_text)
      : what_(what), duplicate_text_(duplicate_text) {}

  nlohmann::json& result() { return root_; }

  bool null() override { return value(nullptr); }
  bool boolean(bool v) override { return value(v); }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override { return value(v); }
  bool number_float(number_float_t v, const string_t& text) override {
    if (!std::isfinite(v))
      fail("{}: the number {} at '{}' is out of range (JSON numbers must fit a double)", what_,
           printable(text.substr(0, 40)), path_text(parents()));
    return value(v);
  }
  bool string(string_t& v) override { return value(std::move(v)); }
  bool binary(binary_t&) override { fail("{} is not valid JSON: binary values are not JSON text", what_); }
  bool start_object(std::size_t) override { return open(nlohmann::json::object()); }
  bool key(string_t& k) override {
    Frame& f = frames_.back();
    auto& obj = f.node->get_ref<nlohmann::json::object_t&>();
    auto [it, fresh] = obj.emplace(k, nullptr);
    if (!fresh) {
      std::vector<std::string> at = parents();
      at.pop_back();  // the previous key of this object, not a parent
      if (duplicate_text_) throw Error(duplicate_text_(at, k));
      fail("{}: key '{}' appears twice in {}; each key may be given once", what_, printable(k),
           at.empty() ? std::string("the top-level object") : "'" + path_text(at) + "'");
    }
    f.key = k;
    f.slot = &it->second;
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(nlohmann::json::array()); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    std::string why = e.what();
    if (why.size() > 200) why = why.substr(0, 197) + "...";
    fail("{} is not valid JSON: {}", what_, printable(why));
  }

 private:
  struct Frame {
    nlohmann::json* node = nullptr;  // the open object or array
    nlohmann::json* slot = nullptr;  // objects: where the value of `key` goes
    std::string key;                 // objects: the key whose value is being parsed
  };

  // The keys and indices that lead to the value now being parsed.
  std::vector<std::string> parents() const {
    std::vector<std::string> out;
    for (size_t j = 0; j < frames_.size(); ++j) {
      const Frame& f = frames_[j];
      // An array's element being parsed: a container inside it is already placed (the last), a
      // scalar comes next.
      const size_t index = f.node->size() - (j + 1 < frames_.size() ? 1 : 0);
      out.push_back(f.node->is_object() ? f.key : "[" + std::to_string(index) + "]");
    }
    return out;
  }
  // Places a value where the parse is: the root, the end of the open array, or the open object's key.
  nlohmann::json* place(nlohmann::json&& v) {
    if (frames_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Frame& f = frames_.back();
    if (f.node->is_array()) {
      f.node->get_ref<nlohmann::json::array_t&>().push_back(std::move(v));
      return &f.node->get_ref<nlohmann::json::array_t&>().back();
    }
    *f.slot = std::move(v);
    return f.slot;
  }
  bool value(nlohmann::json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(nlohmann::json&& container) {
    if (frames_.size() >= static_cast<size_t>(kMaxJsonDepth))
      fail("{} nests deeper than {} levels (at '{}'); no file ditgen reads needs that", what_, kMaxJsonDepth,
           path_text(parents()));
    nlohmann::json* node = place(std::move(container));
    frames_.push_back({node, nullptr, {}});
    return true;
  }
  bool close() {
    frames_.pop_back();
    return true;
  }

  const std::string& what_;
  const DuplicateKeyText& duplicate_text_;
  nlohmann::json root_;
  std::vector<Frame> frames_;
};

}  // namespace

nlohmann::json parse_json(const std::string& text, const std::string& what, const DuplicateKeyText& duplicate_text) {
  StrictParser parser(what, duplicate_text);
  try {
    nlohmann::json::sax_parse(text, &parser);  // throws ditgen::Error on any fault
  } catch (const nlohmann::json::exception& e) {
    fail("{} is not valid JSON: {}", what, printable(e.what()));
  }
  return std::move(parser.result());
}

std::string read_text_file(const std::string& path, uint64_t max_bytes, const std::string& what) {
  const std::string name = what.empty() ? "'" + printable(path) + "'" : what;
  struct stat st {};
  DITGEN_CHECK(::stat(path.c_str(), &st) == 0, "cannot open {}: {}", name, std::strerror(errno));
  // A FIFO would block the read forever, a folder or device is never a config.
  DITGEN_CHECK(S_ISREG(st.st_mode), "{} is not a regular file", name);
  DITGEN_CHECK(static_cast<uint64_t>(st.st_size) <= max_bytes, "{} has {} bytes, more than the {} this file may have",
               name, st.st_size, max_bytes);
  std::ifstream in(path, std::ios::binary);
  DITGEN_CHECK(in.good(), "cannot open {}: {}", name, std::strerror(errno));
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<size_t>(in.gcount()));
  // A file that grew since the stat: the limit holds for what is read, too.
  DITGEN_CHECK(in.peek() == std::ifstream::traits_type::eof(), "{} grew while it was read; read it again", name);
  return out;
}

nlohmann::json read_json_file(const std::string& path) {
  const std::string name = "'" + printable(path) + "'";
  return parse_json(read_text_file(path, kMaxJsonFileBytes, name), name);
}

std::string json_excerpt(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return printable(s);
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
