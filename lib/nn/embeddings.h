#pragma once
// Embeddings the DiTs share.
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace ditgen::nn {

// A config's `axes_dims_rope` against its `attention_head_dim`: every entry even and positive, summing to
// the head dim. Errors name `where` (the file) and the key.
void check_rope_axes(const std::vector<int64_t>& axes, int64_t head_dim, const std::string& where);

// diffusers' sinusoidal timestep features (`Timesteps(channels, flip_sin_to_cos=True,
// downscale_freq_shift=0, scale)`): [B] -> [B, channels] float32, cosines first. The argument is the
// fp32 product v * freq_k, then times `scale` (FLUX.2 passes 1000 * sigma with scale 1; Qwen-Image
// passes sigma with scale 1000): the two rounding orders differ, so each model states its own.
at::Tensor timestep_features(const at::Tensor& v, int64_t channels, double scale = 1.0);

}  // namespace ditgen::nn
