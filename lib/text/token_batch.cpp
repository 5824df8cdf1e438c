#include "lib/text/token_batch.h"

#include <algorithm>

namespace ditgen::text {

TokenBatch pad_tokens(std::vector<std::vector<int64_t>> tokens, int64_t max_length, int64_t pad, PadSide side,
                      bool to_longest) {
  int64_t longest = 0;
  for (auto& t : tokens) {
    if (static_cast<int64_t>(t.size()) > max_length) t.resize(static_cast<size_t>(max_length));
    longest = std::max(longest, static_cast<int64_t>(t.size()));
  }
  const auto batch = static_cast<int64_t>(tokens.size());
  const int64_t length = to_longest ? longest : max_length;
  at::Tensor ids = at::full({batch, length}, pad, at::kLong);
  at::Tensor mask = at::zeros({batch, length}, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& t = tokens[static_cast<size_t>(b)];
    const int64_t offset = side == PadSide::Left ? length - static_cast<int64_t>(t.size()) : 0;
    for (size_t i = 0; i < t.size(); ++i) {
      ids_a[b][offset + static_cast<int64_t>(i)] = t[i];
      mask_a[b][offset + static_cast<int64_t>(i)] = 1;
    }
  }
  return TokenBatch{ids, mask};
}

}  // namespace ditgen::text
