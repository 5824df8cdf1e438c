#pragma once
// A progress line on rank 0 for long stages (loading, denoising): "denoise  12/28  0.53 s/step".
#include <string>

namespace ditgen::runtime {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  void advance(double seconds_this_item);
  void finish();

 private:
  std::string label_;
  int64_t total_, done_ = 0;
  double elapsed_ = 0;
  bool tty_;
};

}  // namespace ditgen::runtime
