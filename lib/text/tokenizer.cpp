#include "lib/text/tokenizer.h"

#include "lib/runtime/error.h"

namespace ditgen::text {

std::shared_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  fail("tokenizer: not implemented yet ({})", path);
}
std::shared_ptr<Tokenizer> Tokenizer::from_json(const nlohmann::json&, const std::string& where) {
  fail("tokenizer: not implemented yet ({})", where);
}

}  // namespace ditgen::text
