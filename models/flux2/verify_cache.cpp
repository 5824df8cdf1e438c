// `ditgen verify` of a DBCache case (../shared/fixtures/cache/<case>): the tiny FLUX.2 pipeline run with
// the case's cache settings from its inputs, compared with what cache-dit did: the steps each block
// list cached, the difference measured at every step, and the final latents. The weights and configs
// are in the case folder or in its sibling folder `model/` (config.json with transformer / vae /
// scheduler, transformer.safetensors, vae.safetensors).
#include <cmath>
#include <set>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/nn/latents.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "models/flux2/pipeline.h"
#include "models/flux2/verify.h"

namespace ditgen::flux2 {

namespace {

// A decision whose reference difference lies this close to the threshold may flip on rounding
// (fixtures README): it is reported as a note, never silently.
constexpr double kNearThreshold = 1e-4;
// Our measured differences against the reference's, absolute.
constexpr double kDiffTolerance = 1e-3;

std::string model_dir(const verify::Case& c) {
  if (io::file_exists(c.file("config.json")) && io::file_exists(c.file("transformer.safetensors")))
    return c.dir();
  std::string d = c.dir();
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  const std::string sibling = io::join_path(d.substr(0, d.find_last_of('/') + 1), "model");
  DITGEN_CHECK(io::file_exists(io::join_path(sibling, "config.json")),
               "cache case '{}': no config.json and weights in the case folder or in '{}'", c.dir(), sibling);
  return sibling;
}

// The case's cache settings (the library's DBCacheConfig names; case.json "cache").
cache::Options case_options(const verify::Case& c) {
  const std::string where = c.file("case.json") + " cache";
  DITGEN_CHECK(c.case_json().contains("cache") && c.case_json()["cache"].is_object(),
               "{}: a cache case needs a 'cache' section", c.file("case.json"));
  const nlohmann::json& j = c.case_json()["cache"];
  cache::Options o;
  o.enabled = true;
  o.list_threshold_rules = false;  // the library API: one threshold for every list (case notes)
  o.Fn = io::json_get<int64_t>(j, "Fn_compute_blocks", 8, where);
  o.Bn = io::json_get<int64_t>(j, "Bn_compute_blocks", 0, where);
  o.residual_diff_threshold = io::json_get<double>(j, "residual_diff_threshold", 0.08, where);
  o.max_warmup_steps = io::json_get<int64_t>(j, "max_warmup_steps", 8, where);
  o.warmup_interval = io::json_get<int64_t>(j, "warmup_interval", 1, where);
  o.max_cached_steps = io::json_get<int64_t>(j, "max_cached_steps", -1, where);
  o.max_continuous_cached_steps = io::json_get<int64_t>(j, "max_continuous_cached_steps", -1, where);
  o.max_accumulated_residual_diff =
      io::json_get<double>(j, "max_accumulated_residual_diff_threshold", 0.0, where);
  const auto mask = io::json_get<std::vector<int64_t>>(j, "steps_computation_mask", {}, where);
  for (int64_t m : mask) {
    DITGEN_CHECK(m == 0 || m == 1, "{}: steps_computation_mask entries must be 0 or 1", where);
    o.steps_mask += m ? '1' : '0';
  }
  o.mask_mode = io::json_get<std::string>(j, "steps_computation_policy", "dynamic", where);
  const auto order = io::json_get<int64_t>(c.case_json(), "taylorseer_order", 0, c.file("case.json"));
  o.taylorseer = order > 0;
  if (order > 0) o.taylorseer_order = order;
  o.validate();
  return o;
}

std::string steps_str(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return "[" + s + "]";
}

void note(verify::Report& report, const std::string& name, const std::string& text) {
  verify::Check c;
  c.name = name;
  c.pass = true;
  c.detail = "note: " + text;
  report.checks.push_back(c);
}

// The reference's cached steps and differences of one list.
struct Reference {
  std::set<int64_t> cached;
  std::map<int64_t, double> diffs;
};

Reference reference_of(const verify::Case& c, const std::string& list) {
  const std::string where = c.file("case.json");
  Reference r;
  const auto& cs = c.case_json().at("cached_steps");
  DITGEN_CHECK(cs.contains(list), "{}: cached_steps has no list '{}'", where, list);
  for (const auto& s : cs.at(list)) r.cached.insert(s.get<int64_t>());
  if (c.case_json().contains("residual_diffs") && c.case_json()["residual_diffs"].contains(list))
    for (const auto& kv : c.case_json()["residual_diffs"][list].items())
      r.diffs[std::stoll(kv.key())] = kv.value();
  return r;
}

void compare_list(verify::Report& report, const Reference& ref, const cache::ListRecord& ours) {
  const std::string& list = ours.list;
  std::vector<int64_t> mine = ours.cached_steps();
  const std::set<int64_t> mine_set(mine.begin(), mine.end());
  std::vector<int64_t> differ;  // steps decided differently, in order
  for (const auto& d : ours.steps)
    if (d.cached != (ref.cached.count(d.step) > 0)) differ.push_back(d.step);
  for (int64_t s : ref.cached)
    if (s >= static_cast<int64_t>(ours.steps.size())) differ.push_back(s);

  const auto ours_diffs = ours.residual_diffs();
  auto near = [&](int64_t step) {
    auto it = ref.diffs.find(step);
    return it != ref.diffs.end() && std::abs(it->second - ours.threshold) <= kNearThreshold;
  };
  const std::string name = "cached_steps." + list;
  if (differ.empty()) {
    verify::expect_equal(report, name, true);
    report.checks.back().detail = fmt::format("identical: {} steps {}", mine.size(), steps_str(mine));
    for (const auto& [s, v] : ref.diffs)
      if (near(s))
        report.checks.back().detail += fmt::format(
            "; step {} lies within {:.0e} of the threshold (reference {:.6f}, ours {}): same decision", s,
            kNearThreshold, v, ours_diffs.count(s) ? fmt::format("{:.6f}", ours_diffs.at(s)) : "none");
  } else if (differ.size() == 1 && near(differ[0])) {
    const int64_t s = differ[0];
    const auto od = ours_diffs.count(s) ? fmt::format("{:.6f}", ours_diffs.at(s)) : std::string("none");
    note(report, name,
         fmt::format(
             "step {} flipped ({} here, {} in the reference): its reference difference {:.6f} lies within "
             "{:.0e} of the threshold {} (ours {}); every other step is identical: {}",
             s, mine_set.count(s) ? "cached" : "computed", ref.cached.count(s) ? "cached" : "computed",
             ref.diffs.at(s), kNearThreshold, ours.threshold, od, steps_str(mine)));
  } else {
    std::string why;
    for (int64_t s : differ) {
      why +=
          fmt::format("{}step {} {} (reference {})", why.empty() ? "" : "; ", s,
                      mine_set.count(s) ? "cached" : "computed", ref.cached.count(s) ? "cached" : "computed");
      if (near(s)) why += " [near the threshold]";
    }
    verify::expect_equal(
        report, name, false,
        fmt::format("ours {} vs reference {}: {}", steps_str(mine),
                    steps_str(std::vector<int64_t>(ref.cached.begin(), ref.cached.end())), why));
  }

  // Differences: measured at the same steps, close in value (up to the first flipped step, after
  // which the two runs follow different trajectories).
  const int64_t until = differ.empty() ? INT64_MAX : differ[0];
  double max_dev = 0;
  int64_t compared = 0;
  std::string missing;
  for (const auto& [s, v] : ref.diffs) {
    if (s > until) continue;
    auto it = ours_diffs.find(s);
    if (it == ours_diffs.end()) {
      missing += fmt::format(" {}", s);
      continue;
    }
    max_dev = std::max(max_dev, std::abs(it->second - v));
    ++compared;
  }
  for (const auto& [s, v] : ours_diffs)
    if (s <= until && !ref.diffs.count(s)) missing += fmt::format(" +{}", s);
  verify::Check c;
  c.name = "residual_diffs." + list;
  c.pass = missing.empty() && max_dev <= kDiffTolerance;
  c.detail =
      fmt::format("max abs deviation {:.2e} over {} steps (tol {:.0e})", max_dev, compared, kDiffTolerance);
  if (until != INT64_MAX) c.detail += fmt::format(", compared up to step {}", until);
  if (!missing.empty()) c.detail += "; measured at different steps (-reference only, +ours only):" + missing;
  report.checks.push_back(c);
}

// Every rank must have taken the same decisions and measured the same differences, bit for bit.
void compare_ranks(verify::Report& report, const std::vector<cache::ListRecord>& records, int64_t steps,
                   const parallel::Context& ctx, const at::Device& device) {
  const int world = ctx.world().size();
  if (world == 1) return;
  std::vector<double> mine;
  for (const auto& r : records) {
    std::vector<double> row(static_cast<size_t>(2 * steps), -3.0);
    for (const auto& d : r.steps) {
      row[static_cast<size_t>(d.step)] = d.cached ? 1.0 : 0.0;
      if (d.diff) row[static_cast<size_t>(steps + d.step)] = *d.diff;
    }
    mine.insert(mine.end(), row.begin(), row.end());
  }
  const auto n = static_cast<int64_t>(mine.size());
  at::Tensor t = at::tensor(mine, at::TensorOptions().dtype(at::kDouble)).to(device);
  at::Tensor all =
      ctx.world().all_gather(t, 0, std::vector<int64_t>(static_cast<size_t>(world), n)).to(at::kCPU);
  std::string bad;
  for (int r = 1; r < world; ++r)
    if (!at::equal(all.narrow(0, r * n, n), all.narrow(0, 0, n))) bad += fmt::format(" {}", r);
  verify::expect_equal(report, "decisions_on_all_ranks", bad.empty(),
                       "ranks" + bad + " decided or measured differently from rank 0");
  if (bad.empty())
    report.checks.back().detail = fmt::format("identical decisions and differences on all {} ranks", world);
}

}  // namespace

void verify_cache(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const std::string dir = model_dir(c);
  const std::string where = io::join_path(dir, "config.json");
  const nlohmann::json config = io::read_json_file(where);
  DITGEN_CHECK(config.contains("transformer") && config.contains("vae"),
               "{}: a cache case's model needs 'transformer' and 'vae' sections", where);
  auto tcfg = TransformerConfig::from_json(config["transformer"], where + " transformer");
  auto vcfg = VaeConfig::from_json(config["vae"], where + " vae");
  auto scfg =
      SchedulerConfig::from_json(config.value("scheduler", nlohmann::json::object()), where + " scheduler");
  auto tsrc = std::make_shared<nn::CheckpointSource>(
      io::TensorStore::open_files({io::join_path(dir, "transformer.safetensors")}));
  auto vsrc = std::make_shared<nn::CheckpointSource>(
      io::TensorStore::open_files({io::join_path(dir, "vae.safetensors")}), "",
      Vae::unread_keys(/*with_encoder=*/false));
  auto ctx = opt.parallel ? opt.parallel : parallel::Context::single();
  Pipeline pipe(tcfg, nn::Weights(tsrc, opt.dtype, opt.device), vcfg,
                nn::Weights(vsrc, opt.dtype, opt.device), scfg, ctx, /*with_encoder=*/false, opt.offload);
  tsrc->check_all_used();
  vsrc->check_all_used();

  const at::Tensor noise = c.tensor("in.latents");  // [B, C_p, h, w] patchified
  pipeline::Settings s;
  s.steps = static_cast<int64_t>(c.scalar("num_inference_steps"));
  s.guidance = c.scalar("guidance_scale");
  s.batch = noise.size(0);
  s.height = noise.size(2) * pipe.pixel_multiple();
  s.width = noise.size(3) * pipe.pixel_multiple();
  s.dtype = opt.dtype;
  s.device = opt.device;
  s.cache = case_options(c);
  pipe.check(s);
  pipeline::Branches branches;
  branches.cond = pipe.condition(c.tensor("in.prompt_embeds"), s);
  auto result =
      pipeline::denoise(pipe, s, branches, {nn::pack_latents(noise.to(opt.device, opt.dtype))}, *ctx);

  const nlohmann::json rep = pipe.cache_report();
  DITGEN_CHECK(rep.is_object(), "cache case '{}': the cache did not run", c.dir());
  std::vector<cache::ListRecord> records;
  for (const auto& list : {"transformer_blocks", "single_transformer_blocks"}) {
    // Our record of the list (branch 0): rebuilt from the report so the check reads what users read.
    cache::ListRecord r;
    for (const auto& l : rep["lists"]) {
      if (l["name"] != list || l["branch"] != 0) continue;
      r.list = list;
      r.threshold = l["threshold"];
      r.blocks = l["blocks"];
      r.Fn = l["Fn"];
      r.Bn = l["Bn"];
      for (const auto& d : l["decisions"]) {
        cache::StepDecision sd;
        sd.step = d["step"];
        sd.cached = d["cached"];
        if (d.contains("diff") && !d["diff"].is_null()) sd.diff = d["diff"].get<double>();
        r.steps.push_back(sd);
      }
    }
    DITGEN_CHECK(!r.list.empty(), "cache case '{}': no record of block list '{}'", c.dir(), list);
    compare_list(report, reference_of(c, list), r);
    records.push_back(r);
  }
  compare_ranks(report, records, s.steps, *ctx, opt.device);
  note(report, "summary", pipe.cache_summary());
  if (opt.offload) {
    // --offload: every block that ran was copied once, the skipped ones never (prefetching stops at Fn);
    // the last call's prefetch of the first blocks of a next one adds at most `depth` copies.
    const nlohmann::json o = pipe.offload_report()["transformer"];
    const int64_t calls = rep["block_calls"], copies = o["copies"], depth = o["depth"];
    verify::expect_equal(report, "offload.copies", o["wasted_copies"] == 0 && copies >= calls && copies <= calls + depth,
                         fmt::format("{} copies for {} block calls (depth {}), {} wasted", copies, calls, depth,
                                     o["wasted_copies"].get<int64_t>()));
    note(report, "offload", pipe.offload_summary());
  }
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-3;
  verify::compare(report, "out.final_latents", result.latents[0], c.tensor("out.final_latents"), tol);
}

}  // namespace ditgen::flux2
