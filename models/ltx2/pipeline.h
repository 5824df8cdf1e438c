#pragma once
// The LTX-2 text-to-video+audio pipeline (docs/reference/ltx2.md §6-7, LTX-2.0 sampling): prompt ->
// Gemma 3 hidden states (all layers, stacked) -> text connectors (video and audio contexts) -> Euler loop
// over the two-stream transformer with classifier-free guidance on each stream -> video VAE decode to
// frames, audio VAE decode to a mel spectrogram and the vocoder to a stereo waveform -> MP4.
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "lib/cache/step_cache.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/load_options.h"
#include "lib/pipeline/model_files.h"
#include "lib/pipeline/runner.h"
#include "lib/sched/flow_match.h"
#include "lib/text/tokenizer.h"
#include "models/llm/decoder.h"
#include "models/ltx2/audio_vae.h"
#include "models/ltx2/connectors.h"
#include "models/ltx2/transformer.h"
#include "models/ltx2/vae.h"
#include "models/ltx2/vocoder.h"

namespace ditgen::ltx2 {

// LTX-2's scheduler values (absent scheduler_config.json keys take these).
sched::FlowMatchConfig scheduler_defaults();

using LoadOptions = pipeline::LoadOptions;

// One CFG branch's conditioning: the connectors' video and audio contexts.
struct Conditioning : pipeline::Conditioning {
  at::Tensor video, audio;  // [B, L, caption_channels] in the pipeline dtype
  at::Tensor mask;          // [B, L] int64, or undefined when every row is real (the registers fill the pads)
};

// Image-to-video (--image): the conditioning image's latent, encoded once per generation; each run puts it
// in latent frame 0 (image_to_video_latents).
struct FirstFrameImage : pipeline::Conditioning {
  at::Tensor latent;  // [1, C, 1, h, w] the encoder's mean (not normalised) in the pipeline dtype
};

// The latent sizes of a generation.
struct Grid {
  int64_t frames = 0, height = 0, width = 0;  // video latent cells: Nv = frames * height * width
  int64_t audio = 0;                          // audio latent rows
};

class Pipeline : public pipeline::ModelBase {
 public:
  Pipeline(const LoadOptions& options, std::shared_ptr<parallel::Context> ctx);

  // From explicit configs and weights (the golden cases): no text encoder.
  struct Parts {
    TransformerConfig transformer;
    ConnectorsConfig connectors;
    VideoVaeConfig vae;
    AudioVaeConfig audio_vae;
    VocoderConfig vocoder;
    sched::FlowMatchConfig scheduler;
    bool image_encoder = false;  // the video VAE's encoder too (image-to-video)
  };
  Pipeline(const Parts& parts, const std::map<std::string, nn::Weights>& weights,
           std::shared_ptr<parallel::Context> ctx);

  // Stacked Gemma states [B, L, hidden * (layers + 1)] and their mask [B, L] (1 = real, left padded)
  // through the connectors.
  std::shared_ptr<Conditioning> condition(const at::Tensor& states, const at::Tensor& mask) const;
  Grid grid(const pipeline::Settings& s) const;
  // The loop's initial latents from given draws, video [B, C, F, H, W] and audio [B, Ca, L, M'] fp32
  // (initial_latents draws them from the seed; the golden cases inject upstream's): packed, and with
  // s.image_conditioning latent frame 0 the image's (image_to_video_latents).
  pipeline::Latents initial_latents_from(const pipeline::Settings& s, const at::Tensor& video_noise,
                                         const at::Tensor& audio_noise) const;
  // Image-to-video's conditioning mask [B, Nv] fp32: 1 on latent frame 0's tokens, 0 elsewhere.
  at::Tensor conditioning_mask(const Grid& g, int64_t batch) const;

  // pipeline::Model
  int64_t pixel_multiple() const override { return video_vae_->spatial_ratio(); }
  // --num-frames must be 1 + a multiple of the VAE's temporal ratio, --max-sequence-length a multiple of
  // the connectors' register count; --image-crf needs FFmpeg.
  void check(const pipeline::Settings& s) const override;
  // CFG runs unless both scales are <= 1; without a negative prompt the empty one is the unconditional
  // branch, as upstream.
  std::string cfg_off_reason(const pipeline::Settings& s) const override;
  nlohmann::json report_settings(const pipeline::Settings& s) const override;
  std::shared_ptr<pipeline::Conditioning> encode(const std::vector<std::string>& prompts,
                                                 const pipeline::Settings& s) const override;
  // Image-to-video (LTX2ImageToVideoPipeline): the image resized to the output size, re-encoded as one
  // H.264 frame at --image-crf (0: not), scaled to [-1, 1] and encoded (--parallel-vae splits it by rows).
  std::shared_ptr<const pipeline::Conditioning> encode_images(const pipeline::Settings& s) const override;
  // Video noise [B, C, F, H, W] then audio noise [B, Ca, L, M'], both fp32 from one CPU generator seeded
  // with s.seed, packed to [B, F*H*W, C] and [B, L, Ca*M'] (§7). The loop keeps them in fp32.
  // Image-to-video: latent frame 0 is the image's (image_to_video_latents).
  pipeline::Latents initial_latents(const pipeline::Settings& s) const override;
  // mu from the video token count (§6).
  sched::Schedule schedule(const pipeline::Settings& s) const override;
  // Image-to-video: the video timestep is per token, t * (1 - mask) with mask 1 on frame 0's tokens (the
  // audio keeps t), and frame 0's velocity is 0, so that the Euler step leaves the image's frame as it is
  // (upstream steps frames 1.. only).
  pipeline::Latents predict(const pipeline::Latents& latents, float t, const pipeline::Conditioning& cond,
                            int branch, const pipeline::Settings& s) const override;
  // Per stream: v = v_u + g (v_c - v_u), with --guidance on the video and --audio-guidance on the audio.
  pipeline::Latents guide(const pipeline::Latents& cond, const pipeline::Latents& uncond,
                          const pipeline::Settings& s) const override;
  // The reference pipeline's CFG: both branches as one transformer call of batch 2b (text padded to the same
  // length in both); not with --offload, where the blocks stream and half the activations leave room for more
  // resident ones.
  std::shared_ptr<pipeline::Conditioning> join_branches(const pipeline::Conditioning& cond,
                                                        const pipeline::Conditioning& uncond,
                                                        const pipeline::Settings& s) const override;
  pipeline::Media decode(const pipeline::Latents& latents, const pipeline::Settings& s) const override;
  // A forward per CFG branch over the grid's video and audio tokens (models/ltx2/work.h).
  pipeline::StepWork step_work(const pipeline::Settings& s) const override;
  void release(pipeline::Component c) override;

 private:
  void build(const Parts& parts, const std::map<std::string, nn::Weights>& weights);

  std::shared_ptr<parallel::Context> ctx_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<llm::DecoderLM> text_encoder_;
  std::unique_ptr<Connectors> connectors_;
  std::unique_ptr<Transformer> transformer_;
  TransformerConfig tcfg_;  // the transformer's config, also while it is deferred or released
  std::unique_ptr<VideoVae> video_vae_;
  bool parallel_vae_ = false;  // VAE-P: decode() splits the image rows over the world
  bool fp8_ = false;           // --fp8: the transformer blocks' linears in e4m3 (read when it loads)
  std::unique_ptr<AudioVae> audio_vae_;
  std::unique_ptr<Vocoder> vocoder_;
  sched::FlowMatchConfig scheduler_;
  nlohmann::json te_json_;  // the text encoder's config as loaded (export writes it back)

  friend void export_tiny(const std::string& dir, int transformer_shards, bool replace);
};

// The built-in tiny model's tokenizer.json: the tiny byte-level BPE with Gemma's <pad>, <eos> and <bos>
// appended and a post-processor that prepends <bos>, as Gemma's does.
nlohmann::json tiny_tokenizer_json();

// Writes the built-in tiny model as a diffusers-format folder (model_index.json, transformer/ in
// `transformer_shards` files with an index, connectors/, vae/, audio_vae/, vocoder/, text_encoder/ with
// Gemma 3's `model.language_model.` names, tokenizer/, scheduler/).
void export_tiny(const std::string& dir, int transformer_shards, bool replace);

// The registry entry of `ditgen ltx2`.
pipeline::ModelEntry model_entry();
// Its command, output stem and diffusers pipeline class (models/ltx2/entry.cpp).
pipeline::ModelIdentity identity();

}  // namespace ditgen::ltx2
