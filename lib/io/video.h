#pragma once
// Video output: MP4 (H.264 yuv420p + AAC stereo) through FFmpeg's libraries, and WAV for the audio
// alone. Frames and samples are quantised as the reference does (docs/reference/ltx2.md §7, encode_video):
// video round-half-even to uint8, audio clipped to [-1, 1] and scaled by 32767 to int16.
#include <ATen/ATen.h>

#include <string>

namespace ditgen::io {

// Whether this build writes MP4 (CMake -DDITGEN_FFMPEG, on where FFmpeg's libraries are found).
bool mp4_supported();
// FFmpeg's version and its libavcodec's, or "not built in".
std::string ffmpeg_version();

// Writes an MP4 file to `path` (usually OutputFiles::add_path(final): the name carries no extension,
// the container is always MP4). frames: [F, 3, H, W] uint8, or float in [0, 1]; H and W even.
// fps > 0 (24 -> 24/1, 23.976 -> 24000/1001, 12.5 -> 25/2). audio: [2, S] float in [-1, 1] (clipped)
// at `sample_rate` Hz, or an undefined tensor for no audio track. Throws ditgen::Error naming the file,
// the stage and FFmpeg's reason; a build without FFmpeg throws naming --save-frames (PNG + WAV). A
// non-empty `comment` goes into the container's metadata (the generation settings).
void write_mp4(const std::string& path, const at::Tensor& frames, double fps, const at::Tensor& audio,
               int sample_rate, const std::string& comment = "");

// An image through one H.264 frame and back, as LTX-2's image-to-video preprocesses its conditioning image
// to look like the compressed frames it was trained on: [H, W, 3] uint8 RGB -> yuv420p -> libx264 (CRF
// `crf` 1..51, preset veryfast) -> decoded -> [H, W, 3] uint8 RGB. H and W even. Deterministic (one
// encoder thread), so every rank gets the same pixels. A build without FFmpeg throws naming --image-crf 0.
at::Tensor h264_roundtrip(const at::Tensor& hwc, int crf);

// The bytes of a 16-bit PCM WAV file for audio [2, S] float (clipped to [-1, 1], * 32767, rounded).
std::string wav_bytes(const at::Tensor& audio, int sample_rate);

}  // namespace ditgen::io
