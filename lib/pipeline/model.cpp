#include "lib/pipeline/model.h"

#include "lib/runtime/error.h"

namespace ditgen::pipeline {

Latents Model::guide(const Latents&, const Latents&, const Settings&) const {
  fail("{}: this model runs no classifier-free guidance branches", name());
}

at::Tensor model_timestep(float t, int64_t batch, at::ScalarType dtype, const at::Device& device) {
  at::Tensor q = at::full({batch}, t, at::TensorOptions().dtype(at::kFloat).device(device)).to(dtype);
  return q / 1000;
}

}  // namespace ditgen::pipeline
