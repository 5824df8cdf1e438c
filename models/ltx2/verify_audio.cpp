// Golden check of the LTX-2 audio VAE decoder and vocoder (fixture models/ltx2_audio_vae_vocoder):
// out.mel = audio_vae.decode(in.latents) and out.waveform = vocoder(out.mel) against diffusers'
// AutoencoderKLLTX2Audio and LTX2Vocoder.
#include "lib/runtime/error.h"
#include "lib/verify/module.h"
#include "models/ltx2/audio_vae.h"
#include "models/ltx2/verify.h"
#include "models/ltx2/vocoder.h"

namespace ditgen::ltx2 {

void verify_audio_vae_vocoder(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const double tol = verify::tolerance(opt, 1e-4);
  const std::string config_file = c.file("config.json");
  for (const char* section : {"audio_vae", "vocoder"})
    DITGEN_CHECK(c.config().is_object() && c.config().contains(section), "{}: missing the '{}' section",
                 config_file, section);
  const AudioVaeConfig vae_config = AudioVaeConfig::from_json(c.config()["audio_vae"], config_file + " [audio_vae]");
  const VocoderConfig voc_config = VocoderConfig::from_json(c.config()["vocoder"], config_file + " [vocoder]");

  const AudioVae vae = verify::load_case_module<AudioVae>(c, opt, vae_config, AudioVae::unread_keys());
  auto voc_source = verify::case_weights(c, {}, "vocoder.safetensors");
  const Vocoder vocoder(voc_config, nn::Weights(voc_source, opt.dtype, opt.device));
  voc_source->check_all_used();

  // The fixture's latents_mean/std are 0/1, so in.latents are the de-normalised decoder input either
  // way; decode itself never de-normalises (the pipeline does, on the packed latents).
  const at::Tensor latents = c.tensor("in.latents");  // [B, C, L, M']
  verify::compare(report, "out.mel", vae.decode(latents), c.tensor("out.mel"), tol);
  // The vocoder runs on the reference mel, so each check measures one module.
  const at::Tensor mel = c.tensor("out.mel");  // [B, 2, 4L-3, mel_bins]
  verify::compare(report, "out.waveform", vocoder.forward(mel), c.tensor("out.waveform"), tol);
}

}  // namespace ditgen::ltx2
