#include "lib/pipeline/runner.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"
#include "lib/runtime/trace.h"

// The denoising loop and the CFG branches it runs (runner.h).
namespace ditgen::pipeline {

Branches encode_branches(const Model& model, const Settings& s, const parallel::Context& ctx,
                         bool text_on_all_ranks) {
  const std::vector<std::string> prompts(static_cast<size_t>(s.batch), s.prompt);
  Branches b;
  if (!model.cfg_off_reason(s).empty()) {
    b.cond = model.encode(prompts, s);
    return b;
  }
  const std::vector<std::string> negatives(static_cast<size_t>(s.batch), s.negative_prompt);
  const auto& mesh = ctx.mesh();
  const bool both = mesh.shape().cfg == 1 || text_on_all_ranks;
  if (both || mesh.cfg_index() == 0) b.cond = model.encode(prompts, s);
  if (both || mesh.cfg_index() == 1) b.uncond = model.encode(negatives, s);
  if (mesh.shape().cfg == 2) (mesh.cfg_index() == 0 ? b.uncond : b.cond).reset();  // the other half's
  return b;
}

void join_branches(const Model& model, Branches& b, Settings& s, const parallel::Context& ctx) {
  b.both.reset();
  s.joint_cfg = false;
  if (!b.cond || !b.uncond || ctx.mesh().shape().cfg != 1) return;
  b.both = model.join_branches(*b.cond, *b.uncond, s);
  s.joint_cfg = b.both != nullptr;
}

namespace {

// Under --cfg 2: this half's velocities in, (conditional, unconditional) out, with one all-gather of
// every stream flattened into one buffer.
std::pair<Latents, Latents> exchange_branches(const Latents& mine, const parallel::Context& ctx) {
  std::vector<at::Tensor> flat;
  for (const auto& t : mine) flat.push_back(t.reshape({-1}));
  at::Tensor buf = at::cat(flat, 0).contiguous();
  const int64_t n = buf.numel();
  at::Tensor both = ctx.cfg().all_gather(buf, 0, {n, n});  // [cond | uncond]
  std::pair<Latents, Latents> out;
  int64_t offset = 0;
  for (const auto& t : mine) {
    out.first.push_back(both.narrow(0, offset, t.numel()).view(t.sizes()));
    out.second.push_back(both.narrow(0, n + offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
  return out;
}

}  // namespace

DenoiseResult denoise(const Model& model, const Settings& s, const Branches& b, Latents latents,
                      const parallel::Context& ctx, const StepCallback& on_step) {
  DenoiseResult r;
  r.schedule = model.schedule(s);
  const bool cfg = model.cfg_off_reason(s).empty();
  const bool split = ctx.mesh().shape().cfg == 2;
  DITGEN_CHECK(!split || cfg, "--cfg 2 needs classifier-free guidance: {}", model.cfg_off_reason(s));
  const int64_t steps = static_cast<int64_t>(r.schedule.timesteps.size());
  // Whether every latent is finite after each step, kept on the device: one host read after the loop.
  std::vector<at::Tensor> finite;
  for (int64_t i = 0; i < steps; ++i) {
    runtime::Stopwatch sw(s.device);
    model.on_step(i, steps);
    const float t = r.schedule.timesteps[i];
    Latents v;
    if (!cfg) {
      v = model.predict(latents, t, *b.cond, 0, s);
    } else if (split) {
      const int me = ctx.mesh().cfg_index();
      const auto both =
          exchange_branches(model.predict(latents, t, me == 0 ? *b.cond : *b.uncond, me, s), ctx);
      v = model.guide(both.first, both.second, s);
    } else if (b.both) {  // one call on [latents | latents]: the first half conditional
      Latents twice;
      for (const at::Tensor& x : latents) twice.push_back(at::cat({x, x}, 0));
      const Latents both = model.predict(twice, t, *b.both, 0, s);
      Latents vc, vu;
      for (size_t k = 0; k < both.size(); ++k) {
        const int64_t n = latents[k].size(0);
        vc.push_back(both[k].narrow(0, 0, n));
        vu.push_back(both[k].narrow(0, n, n));
      }
      v = model.guide(vc, vu, s);
    } else {
      const Latents vc = model.predict(latents, t, *b.cond, 0, s);
      v = model.guide(vc, model.predict(latents, t, *b.uncond, 1, s), s);
    }
    const double dsigma = static_cast<double>(r.schedule.sigmas[i + 1] - r.schedule.sigmas[i]);
    for (size_t k = 0; k < latents.size(); ++k)
      latents[k] = (latents[k].to(at::kFloat) + v[k].mul(dsigma)).to(latents[k].scalar_type());
    if (!s.allow_nonfinite) {
      at::Tensor ok = at::isfinite(latents[0]).all();
      for (size_t k = 1; k < latents.size(); ++k) ok = ok.logical_and(at::isfinite(latents[k]).all());
      finite.push_back(ok);
    }
    const double sec = sw.seconds();
    r.step_seconds.push_back(sec);
    if (on_step) on_step(i, sec);
  }
  for (size_t k = 0; k < latents.size(); ++k)
    runtime::trace(k == 0 ? std::string("final_latents") : fmt::format("final_latents.{}", k), latents[k]);
  if (!finite.empty()) {
    const at::Tensor flags = at::stack(finite).to(at::kCPU);
    for (int64_t i = 0; i < steps; ++i)
      DITGEN_CHECK(
          flags[i].item<bool>(),
          "the latents became NaN or Inf at denoising step {} of {} (the weights or the settings overflow "
          "the {} arithmetic; --trace DIR writes the named intermediates of the first step to find where; "
          "--allow-nonfinite keeps going)",
          i + 1, steps, c10::toString(s.dtype));
  }
  r.latents = std::move(latents);
  return r;
}

}  // namespace ditgen::pipeline
