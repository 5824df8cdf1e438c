// The shared runner with a stand-in model: settings resolution, the Euler loop, true CFG branches,
// the non-finite check; and the all-or-nothing output files.
#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "lib/io/json.h"
#include "lib/io/output_files.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/output.h"
#include "lib/pipeline/runner.h"
#include "lib/runtime/error.h"
#include "lib/sched/flow_match.h"

using namespace ditgen;

namespace {

struct FakeConditioning : pipeline::Conditioning {
  double scale = 1;
  at::Tensor item_scale;  // joined branches: one scale per batch item
};

// Velocity = scale * latents (scale 1 for the prompt, 3 for the negative prompt), optionally NaN at
// one call; records the branch of every call.
struct FakeModel : pipeline::Model {
  std::string name_ = "fake";
  nlohmann::json defaults_ = {{"prompt", "preset prompt"}, {"negative_prompt", "preset negative"},
                              {"height", 16},          {"width", 24},
                              {"steps", 4},            {"max_sequence_length", 8},
                              {"true_cfg_scale", 2.0}};
  int nan_at_call = -1;
  bool joins = false;  // stacks the CFG branches (join_branches)
  mutable std::vector<int> branches;
  mutable std::vector<int64_t> batch_sizes;

  const std::string& name() const override { return name_; }
  const nlohmann::json& defaults() const override { return defaults_; }
  int64_t pixel_multiple() const override { return 8; }
  std::string cfg_off_reason(const pipeline::Settings& s) const override {
    return s.true_cfg_scale > 1 && s.has_negative_prompt ? "" : "off";
  }
  std::shared_ptr<pipeline::Conditioning> encode(const std::vector<std::string>& prompts,
                                                 const pipeline::Settings& s) const override {
    auto c = std::make_shared<FakeConditioning>();
    c->scale = prompts.at(0) == s.negative_prompt ? 3 : 1;
    return c;
  }
  pipeline::Latents initial_latents(const pipeline::Settings& s) const override {
    return {at::ones({s.batch, 6, 4}, at::kFloat)};
  }
  sched::Schedule schedule(const pipeline::Settings& s) const override {
    return sched::static_shift_schedule(s.steps, 1.0);
  }
  pipeline::Latents predict(const pipeline::Latents& latents, float, const pipeline::Conditioning& cond, int branch,
                            const pipeline::Settings&) const override {
    branches.push_back(branch);
    batch_sizes.push_back(latents[0].size(0));
    const auto& c = static_cast<const FakeConditioning&>(cond);
    at::Tensor v = c.item_scale.defined() ? latents[0] * c.item_scale.view({-1, 1, 1}) : latents[0] * c.scale;
    if (static_cast<int>(branches.size()) - 1 == nan_at_call) v[0][0][0] = NAN;
    return {v};
  }
  pipeline::Latents guide(const pipeline::Latents& c, const pipeline::Latents& u,
                          const pipeline::Settings& s) const override {
    return {u[0] + (c[0] - u[0]) * s.true_cfg_scale};
  }
  std::shared_ptr<pipeline::Conditioning> join_branches(const pipeline::Conditioning& cond,
                                                        const pipeline::Conditioning& uncond,
                                                        const pipeline::Settings& s) const override {
    if (!joins) return nullptr;
    auto both = std::make_shared<FakeConditioning>();
    both->item_scale = at::cat({at::full({s.batch}, static_cast<const FakeConditioning&>(cond).scale),
                                at::full({s.batch}, static_cast<const FakeConditioning&>(uncond).scale)});
    return both;
  }
  pipeline::Media decode(const pipeline::Latents& latents, const pipeline::Settings&) const override {
    pipeline::Media m;
    m.images = at::zeros({latents[0].size(0), 3, 16, 24});
    return m;
  }
  std::map<std::string, uint64_t> bytes_read() const override { return {}; }
};

pipeline::Settings settings(const FakeModel& m, pipeline::GenerateRequest req = {}) {
  return pipeline::resolve_settings(req, m, at::kCPU, at::kFloat);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string temp_dir(const std::string& name) {
  const std::string d = std::filesystem::temp_directory_path() / ("ditgen_runner_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("runner: settings come from the request, else the presets; an empty prompt stays empty", "[runner]") {
  FakeModel m;
  pipeline::Settings s = settings(m);
  CHECK(s.prompt == "preset prompt");
  CHECK(s.has_negative_prompt);
  CHECK(s.negative_prompt == "preset negative");
  CHECK(s.height == 16);
  CHECK(s.steps == 4);
  CHECK(s.true_cfg_scale == 2.0);

  pipeline::GenerateRequest req;
  req.prompt = "";
  req.negative_prompt = "";
  req.steps = 7;
  req.true_cfg_scale = 0.5;
  s = settings(m, req);
  CHECK(s.prompt.empty());
  CHECK(s.negative_prompt.empty());
  CHECK(s.has_negative_prompt);
  CHECK(s.steps == 7);
  CHECK(s.true_cfg_scale == 0.5);
}

TEST_CASE("runner: Euler steps follow the schedule without CFG", "[runner]") {
  FakeModel m;
  pipeline::GenerateRequest req;
  req.true_cfg_scale = 1;  // CFG off: one call per step, branch 0
  const auto s = settings(m, req);
  const auto ctx = parallel::Context::single();
  const auto b = pipeline::encode_branches(m, s, *ctx);
  REQUIRE(b.cond);
  CHECK_FALSE(b.uncond);
  const auto r = pipeline::denoise(m, s, b, m.initial_latents(s), *ctx);
  CHECK(m.branches == std::vector<int>(4, 0));
  // x <- x + (s_{i+1} - s_i) x, step by step.
  double expect = 1;
  for (int i = 0; i < 4; ++i) expect *= 1 + (r.schedule.sigmas[i + 1] - r.schedule.sigmas[i]);
  CHECK(r.latents[0][0][0][0].item<double>() == Approx(expect).epsilon(1e-6));
  CHECK(r.step_seconds.size() == 4);
}

TEST_CASE("runner: true CFG runs both branches and combines them through the model", "[runner]") {
  FakeModel m;
  const auto s = settings(m);  // scale 2, negative prompt given
  const auto ctx = parallel::Context::single();
  const auto b = pipeline::encode_branches(m, s, *ctx);
  REQUIRE(b.cond);
  REQUIRE(b.uncond);
  const auto r = pipeline::denoise(m, s, b, m.initial_latents(s), *ctx);
  CHECK(m.branches == std::vector<int>({0, 1, 0, 1, 0, 1, 0, 1}));
  // v = u + g (c - u) = 3x + 2 (x - 3x) = -x.
  double expect = 1;
  for (int i = 0; i < 4; ++i) expect *= 1 - (r.schedule.sigmas[i + 1] - r.schedule.sigmas[i]);
  CHECK(r.latents[0][0][0][0].item<double>() == Approx(expect).epsilon(1e-6));
}

TEST_CASE("runner: a model that stacks the CFG branches gets one call of twice the batch a step", "[runner]") {
  FakeModel m;
  m.joins = true;
  pipeline::GenerateRequest req;
  req.batch = 2;
  auto s = settings(m, req);
  const auto ctx = parallel::Context::single();
  auto b = pipeline::encode_branches(m, s, *ctx);
  pipeline::join_branches(m, b, s, *ctx);
  REQUIRE(b.both);
  CHECK(s.joint_cfg);
  const auto joint = pipeline::denoise(m, s, b, m.initial_latents(s), *ctx);
  CHECK(m.branches == std::vector<int>(4, 0));
  CHECK(m.batch_sizes == std::vector<int64_t>(4, 4));
  // The same result as the branches one after the other.
  m.branches.clear();
  b.both.reset();
  const auto apart = pipeline::denoise(m, s, b, m.initial_latents(s), *ctx);
  CHECK(m.branches == std::vector<int>({0, 1, 0, 1, 0, 1, 0, 1}));
  CHECK(at::equal(joint.latents[0], apart.latents[0]));
  CHECK(joint.latents[0].size(0) == 2);

  // A model that does not stack them, or no CFG: nothing joined.
  m.joins = false;
  pipeline::join_branches(m, b, s, *ctx);
  CHECK_FALSE(b.both);
  CHECK_FALSE(s.joint_cfg);
  m.joins = true;
  req.true_cfg_scale = 1;
  auto off = settings(m, req);
  auto bo = pipeline::encode_branches(m, off, *ctx);
  pipeline::join_branches(m, bo, off, *ctx);
  CHECK_FALSE(bo.both);
}

TEST_CASE("runner: NaN latents stop the loop naming the step, unless allowed", "[runner]") {
  FakeModel m;
  m.nan_at_call = 2;  // the third step without CFG
  pipeline::GenerateRequest req;
  req.true_cfg_scale = 1;
  auto s = settings(m, req);
  const auto ctx = parallel::Context::single();
  const auto b = pipeline::encode_branches(m, s, *ctx);
  const std::string e = error_of([&] { pipeline::denoise(m, s, b, m.initial_latents(s), *ctx); });
  CHECK_THAT(e, Catch::Contains("became NaN or Inf at denoising step 3 of 4") && Catch::Contains("--allow-nonfinite"));

  m.branches.clear();
  s.allow_nonfinite = true;
  const auto r = pipeline::denoise(m, s, b, m.initial_latents(s), *ctx);
  CHECK(std::isnan(r.latents[0][0][0][0].item<double>()));
}

TEST_CASE("output paths: the extension decides, other formats are refused", "[runner][output]") {
  const std::string d = temp_dir("paths");
  auto p = pipeline::output_paths(d + "/img.png", "m", 16, 24, 0, "C0", 2);
  CHECK(p.files == std::vector<std::string>({d + "/img_0.png", d + "/img_1.png"}));
  CHECK(p.report == d + "/img.json");
  p = pipeline::output_paths(d + "/runs.v2/", "m", 16, 24, 0, "C0", 1);
  CHECK(p.files.at(0) == d + "/runs.v2/m.16x24.C0.png");
  CHECK(std::filesystem::is_directory(d + "/runs.v2"));
  p = pipeline::output_paths(d + "/plain", "m", 16, 24, 0, "C0_TP2", 1);
  CHECK(p.files.at(0) == d + "/plain/m.16x24.C0_TP2.png");
  CHECK_THAT(error_of([&] { pipeline::output_paths(d + "/x.jpg", "m", 16, 24, 0, "C0", 1); }),
             Catch::Contains("this model writes PNG images"));
  CHECK_FALSE(std::filesystem::exists(d + "/x.jpg"));
  // Videos: .mp4, named with the frame count; a .png name is refused.
  p = pipeline::output_paths(d + "/vids/", "ltx2", 64, 96, 9, "C0_Ulysses2", 1, "mp4");
  CHECK(p.files.at(0) == d + "/vids/ltx2.64x96x9.C0_Ulysses2.mp4");
  CHECK(p.stems.at(0) == d + "/vids/ltx2.64x96x9.C0_Ulysses2");
  p = pipeline::output_paths(d + "/clip.MP4", "ltx2", 64, 96, 9, "C0", 2, "mp4");
  CHECK(p.files == std::vector<std::string>({d + "/clip_0.mp4", d + "/clip_1.mp4"}));
  CHECK_THAT(error_of([&] { pipeline::output_paths(d + "/clip.png", "ltx2", 64, 96, 9, "C0", 1, "mp4"); }),
             Catch::Contains("this model writes MP4 videos"));
  std::filesystem::remove_all(d);
}

TEST_CASE("output files: all or nothing", "[runner][output]") {
  const std::string d = temp_dir("files");
  auto listing = [&] {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(d)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  };
  {
    io::OutputFiles out;
    out.add(d + "/a.png", "image");
    out.add(d + "/a.json", "{}");
    CHECK(listing().size() == 2);  // temporaries, under other names
    CHECK_FALSE(std::filesystem::exists(d + "/a.png"));
  }  // destroyed without commit: an error somewhere in the job
  CHECK(listing().empty());

  {
    io::OutputFiles out;
    out.add(d + "/a.png", "image");
    CHECK_THROWS_AS(out.add(d + "/missing/a.json", "{}"), Error);
  }
  CHECK(listing().empty());

  io::OutputFiles out;
  out.add(d + "/a.png", "image");
  out.add(d + "/a.json", "{}");
  out.commit();
  CHECK(listing() == std::vector<std::string>({"a.json", "a.png"}));
  std::ifstream in(d + "/a.png");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text == "image");
  std::filesystem::remove_all(d);
}

TEST_CASE("output folder: refuses a non-empty folder, replaces on request", "[runner][output]") {
  const std::string d = temp_dir("folder");
  const std::string target = d + "/export";
  std::filesystem::create_directories(target + "/old");
  std::ofstream(target + "/old/stale.txt") << "stale";
  CHECK_THAT(error_of([&] { io::OutputFolder f(target, false); }), Catch::Contains("is not empty"));
  {
    io::OutputFolder f(target, true);
    std::ofstream(f.path() + "/new.txt") << "new";
  }  // not committed: the old folder stays, the staging folder goes
  CHECK(std::filesystem::exists(target + "/old/stale.txt"));
  CHECK(std::distance(std::filesystem::directory_iterator(d), std::filesystem::directory_iterator()) == 1);
  {
    io::OutputFolder f(target, true);
    std::ofstream(f.path() + "/new.txt") << "new";
    f.commit();
  }
  CHECK(std::filesystem::exists(target + "/new.txt"));
  CHECK_FALSE(std::filesystem::exists(target + "/old"));
  CHECK(std::distance(std::filesystem::directory_iterator(d), std::filesystem::directory_iterator()) == 1);
  std::filesystem::remove_all(d);
}

TEST_CASE("schedules: Qwen-Image's dynamic shift with the terminal stretch (qwen-image.md 5.3)", "[runner][sched]") {
  // 1024^2: 4096 image tokens, base 0.5 / max 0.9 over 256..8192 tokens, terminal 0.02.
  const double mu = sched::linear_mu(4096, 256, 8192, 0.5, 0.9);
  CHECK(mu == Approx(0.693548).epsilon(1e-5));
  const auto s = sched::exponential_shift_schedule(20, mu, 0.02);
  const std::vector<double> ref = {1.0,    .97224, .94301, .91221, .87969, .84531, .80891, .77030, .72928, .68561,
                                   .63903, .58923, .53588, .47857, .41685, .35018, .27796, .19946, .11381, .02};
  REQUIRE(s.sigmas.size() == 21);
  for (size_t i = 0; i < ref.size(); ++i) CHECK(s.sigmas[i] == Approx(ref[i]).margin(1e-5));
  CHECK(s.sigmas.back() == 0.0f);
  CHECK(s.timesteps[1] == Approx(1000 * s.sigmas[1]));
  // One step: the reference's stretch divides 0 by 0; ours keeps the single sigma at 1.
  const auto one = sched::exponential_shift_schedule(1, mu, 0.02);
  CHECK(one.sigmas == std::vector<float>({1.0f, 0.0f}));
}
