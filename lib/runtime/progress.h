#pragma once
// Progress of long stages on rank 0 (loading, denoising). On a terminal a live bar:
//   denoise  [##########              ] 12/28  0.531 s/it  eta 8.5 s
//   load transformer [####      ] 212/1184  11.9 GiB  2.41 GiB/s  eta 39.7 s
// in logs about ten plain lines per stage.
#include <cstdint>
#include <string>

namespace ditgen::runtime {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  // One more item done, that took `seconds`; `bytes` (loading) adds to the bytes shown with their rate.
  void advance(double seconds_this_item, int64_t bytes = 0);
  void finish();

 private:
  std::string label_;
  int64_t total_, done_ = 0;
  double elapsed_ = 0;
  int64_t bytes_ = 0;
  bool tty_;
};

}  // namespace ditgen::runtime
