#include "lib/text/verify_tokenizer.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "lib/io/json.h"
#include "lib/text/tokenizer.h"

namespace ditgen::text {

namespace {

// Printable form of a string for a report line: escapes controls, cut to `max` bytes.
std::string show(const std::string& s, size_t max = 60) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\r')
      out += "\\r";
    else if (c < 0x20)
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  if (s.size() > max) out += "...";
  return "\"" + out + "\"";
}

std::string ids_detail(const std::vector<int64_t>& ours, const std::vector<int64_t>& ref,
                       const Tokenizer& tok) {
  size_t i = 0;
  while (i < ours.size() && i < ref.size() && ours[i] == ref[i]) ++i;
  auto at = [&](const std::vector<int64_t>& v) {
    if (i >= v.size()) return std::string("(end)");
    return fmt::format("{} {}", v[i], show(tok.id_to_token(v[i]).value_or("?"), 24));
  };
  return fmt::format("first difference at index {}: ours {} vs ref {} ({} vs {} ids)", i, at(ours), at(ref),
                     ours.size(), ref.size());
}

std::string text_detail(const std::string& ours, const std::string& ref) {
  size_t i = 0;
  while (i < ours.size() && i < ref.size() && ours[i] == ref[i]) ++i;
  const size_t from = i > 10 ? i - 10 : 0;
  return fmt::format("first difference at byte {}: ours {} vs ref {}", i, show(ours.substr(from), 40),
                     show(ref.substr(from), 40));
}

std::vector<int64_t> id_list(const nlohmann::json& j, const std::string& key, const std::string& where) {
  return io::json_require<std::vector<int64_t>>(j, key, where);
}

}  // namespace

void verify_tokenizer_folder(const std::string& dir, verify::Report& report) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto tok = Tokenizer::from_file(dir);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("{}: tokenizer loaded in {:.2f} s (vocab size {})", dir, load_s, tok->vocab_size());

  const std::string golden_path = io::join_path(dir, "golden.json");
  const nlohmann::json golden = io::read_json_file(golden_path);
  auto cases = golden.find("cases");
  DITGEN_CHECK(cases != golden.end() && cases->is_array(), "'{}' has no \"cases\" list", golden_path);
  for (size_t i = 0; i < cases->size(); ++i) {
    const auto& c = (*cases)[i];
    const std::string where = fmt::format("'{}' cases[{}]", golden_path, i);
    const std::string text = io::json_require<std::string>(c, "text", where);
    const std::string name = fmt::format("case{}", i);
    const auto ref_ids = id_list(c, "ids", where);

    const auto ids = tok->encode(text, false);
    verify::expect_equal(report, name + ".ids", ids == ref_ids,
                         ids_detail(ids, ref_ids, *tok) + " for text " + show(text));
    if (c.contains("ids_with_special")) {
      const auto ref_sp = id_list(c, "ids_with_special", where);
      const auto sp = tok->encode(text, true);
      verify::expect_equal(report, name + ".ids_with_special", sp == ref_sp,
                           ids_detail(sp, ref_sp, *tok) + " for text " + show(text));
    }
    // The reference decoded the special-free ids, special tokens kept.
    const std::string ref_text = io::json_get<std::string>(c, "decoded", text, where);
    const std::string decoded = tok->decode(ref_ids, false);
    verify::expect_equal(report, name + ".decoded", decoded == ref_text, text_detail(decoded, ref_text));
  }
}

void verify_tokenizer(const verify::Case& c, const verify::CaseOptions&, verify::Report& report) {
  verify_tokenizer_folder(c.dir(), report);
}

}  // namespace ditgen::text
