#include "lib/comm/agreement.h"

#include <cstring>
#include <map>

#include "lib/comm/mpi_communicator.h"
#include "lib/runtime/error.h"

namespace ditgen::comm {

namespace {

// Unit and record separators cannot appear in a parsed flag name and are escaped in values.
constexpr char kUnit = '\x1f', kRecord = '\x1e';

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == kUnit || c == kRecord || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string serialize(const RequestFields& fields) {
  std::string out;
  for (const auto& [k, v] : fields) out += escape(k) + kUnit + escape(v) + kRecord;
  return out;
}

RequestFields deserialize(const std::string& s) {
  RequestFields out;
  std::string cur, key;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\' && i + 1 < s.size()) {
      cur += s[++i];
    } else if (c == kUnit) {
      key = cur;
      cur.clear();
    } else if (c == kRecord) {
      out.emplace_back(key, cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

// Values in messages: quoted, long ones shortened.
std::string shown(const std::string& v) {
  std::string s = v.size() > 60 ? v.substr(0, 57) + "..." : v;
  return "'" + s + "'";
}

}  // namespace

std::string describe_request_differences(const std::vector<RequestFields>& requests) {
  std::vector<std::map<std::string, std::string>> maps;
  std::vector<std::string> order;  // field names in first-seen order
  for (const auto& r : requests) {
    maps.emplace_back();
    for (const auto& [k, v] : r) {
      if (!maps.back().count(k)) {
        bool seen = false;
        for (const auto& o : order) seen = seen || o == k;
        if (!seen) order.push_back(k);
      }
      maps.back()[k] = v;
    }
  }
  std::string msg;
  for (const auto& name : order) {
    auto value_of = [&](size_t r) {
      auto it = maps[r].find(name);
      return it == maps[r].end() ? std::string("(not given)") : shown(it->second);
    };
    std::string differing;
    for (size_t r = 1; r < maps.size(); ++r)
      if (value_of(r) != value_of(0)) differing += fmt::format("{}{} on rank {}", differing.empty() ? "" : ", ", value_of(r), r);
    if (!differing.empty())
      msg += fmt::format("{}{} is {} on rank 0 but {}", msg.empty() ? "" : "; ", name, value_of(0), differing);
  }
  return msg;
}

void check_same_request(const LaunchInfo& info, const RequestFields& fields, double timeout_s) {
  if (info.world == 1) return;
  auto world = make_mpi_world(timeout_s);  // MPI carries this check even when tensors go over NCCL
  const std::string mine = serialize(fields);
  at::Tensor len = at::tensor({static_cast<int64_t>(mine.size())}, at::kLong);
  const at::Tensor lens = world->all_gather(len, 0, std::vector<int64_t>(static_cast<size_t>(info.world), 1));
  std::vector<int64_t> sizes(static_cast<size_t>(info.world));
  for (int r = 0; r < info.world; ++r) sizes[static_cast<size_t>(r)] = lens[r].item<int64_t>();
  at::Tensor bytes = at::empty({static_cast<int64_t>(mine.size())}, at::kByte);
  if (!mine.empty()) std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  const at::Tensor all = world->all_gather(bytes, 0, sizes);
  std::vector<RequestFields> requests;
  int64_t offset = 0;
  for (int r = 0; r < info.world; ++r) {
    const auto* p = static_cast<const char*>(all.data_ptr()) + offset;
    requests.push_back(deserialize(std::string(p, static_cast<size_t>(sizes[static_cast<size_t>(r)]))));
    offset += sizes[static_cast<size_t>(r)];
  }
  const std::string diff = describe_request_differences(requests);
  DITGEN_CHECK(diff.empty(),
               "the {} ranks were not started with the same request: {}. Every rank must run the same command "
               "line (an MPMD launch or a wrapper that varies flags per rank gives a wrong image)",
               info.world, diff);
}

}  // namespace ditgen::comm
