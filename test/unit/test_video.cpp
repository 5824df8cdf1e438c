// MP4 (H.264 + AAC) and WAV output, checked from outside with ffprobe / ffmpeg (Debian package ffmpeg).
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "lib/io/image.h"
#include "lib/io/output_files.h"
#include "lib/io/video.h"
#include "lib/runtime/error.h"

namespace fs = std::filesystem;
using ditgen::io::wav_bytes;
using ditgen::io::write_mp4;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    path = (fs::temp_directory_path() / "ditgen_video_XXXXXX").string();
    REQUIRE(::mkdtemp(&path[0]) != nullptr);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

// A moving smooth colour pattern: [F, 3, H, W] float in [0, 1].
at::Tensor gradient_clip(int64_t f, int64_t h, int64_t w) {
  auto t = at::arange(f, at::kFloat).div(f).view({f, 1, 1});
  auto y = at::arange(h, at::kFloat).div(h).view({1, h, 1});
  auto x = at::arange(w, at::kFloat).div(w).view({1, 1, w});
  const double two_pi = 2 * M_PI;
  auto r = 0.5 + 0.4 * at::sin(two_pi * (x + t));
  auto g = (0.1 + 0.8 * y).expand({f, h, w});
  auto b = 0.5 + 0.4 * at::cos(two_pi * (y - t));
  return at::stack({r.expand({f, h, w}), g, b.expand({f, h, w})}, 1).contiguous();
}

// A 440 Hz tone, [2, S] float: the right channel at half the level.
at::Tensor tone(int64_t samples, int rate) {
  auto s = 0.5 * at::sin(at::arange(samples, at::kDouble) * (2 * M_PI * 440.0 / rate)).to(at::kFloat);
  return at::stack({s, 0.5 * s});
}

std::string run(const std::string& cmd, int* rc = nullptr) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (rc) *rc = status;
  return out;
}

void require_ffprobe() {
  int rc = 0;
  run("ffprobe -version > /dev/null 2>&1", &rc);
  if (rc != 0) FAIL("ffprobe not found: run scripts/setup.sh (it installs the Debian package ffmpeg)");
}

// ffprobe's key=value entries for one stream ("v:0", "a:0").
std::map<std::string, std::string> probe(const std::string& path, const std::string& stream) {
  int rc = 0;
  const std::string out = run("ffprobe -v error -count_frames -select_streams " + stream +
                                  " -show_entries stream=codec_name,codec_type,pix_fmt,width,height,nb_read_frames,"
                                  "r_frame_rate,duration,channels,sample_rate -of default=noprint_wrappers=1 '" +
                                  path + "'",
                              &rc);
  REQUIRE(rc == 0);
  std::map<std::string, std::string> kv;
  size_t pos = 0;
  while (pos < out.size()) {
    const size_t end = out.find('\n', pos);
    const std::string line = out.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    const size_t eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
    pos = end == std::string::npos ? out.size() : end + 1;
  }
  return kv;
}

// MP4 tests need a build with FFmpeg: without, they end the process with 77 (CTest: skipped).
void require_mp4() {
  if (ditgen::io::mp4_supported()) return;
  std::printf("SKIP: built with -DDITGEN_FFMPEG=OFF, no MP4 output\n");
  std::fflush(stdout);
  std::exit(77);
}

int stream_count(const std::string& path) {
  const std::string out = run("ffprobe -v error -show_entries stream=index -of csv=p=0 '" + path + "'");
  return static_cast<int>(std::count(out.begin(), out.end(), '\n'));
}

}  // namespace


TEST_CASE("write_mp4: H.264 yuv420p + AAC stereo, frame count, rate, durations, pixels", "[video]") {
  require_mp4();
  require_ffprobe();
  TempDir dir;
  const std::string path = dir.path + "/clip.mp4";
  const at::Tensor frames = gradient_clip(48, 64, 96);  // 2 s at 24 fps
  write_mp4(path, frames, 24.0, tone(48000, 24000), 24000);
  CHECK(dir.names() == std::vector<std::string>{"clip.mp4"});  // no side files

  auto v = probe(path, "v:0");
  CHECK(v["codec_name"] == "h264");
  CHECK(v["pix_fmt"] == "yuv420p");
  CHECK(v["width"] == "96");
  CHECK(v["height"] == "64");
  CHECK(v["nb_read_frames"] == "48");
  CHECK(v["r_frame_rate"] == "24/1");
  CHECK(std::stod(v["duration"]) == Approx(2.0).margin(1.0 / 24));

  auto a = probe(path, "a:0");
  CHECK(a["codec_name"] == "aac");
  CHECK(a["channels"] == "2");
  CHECK(a["sample_rate"] == "24000");
  CHECK(std::stod(a["duration"]) == Approx(2.0).margin(0.025));

  // The first frame decoded back to RGB is close to the input (yuv420p halves the chroma resolution and
  // libx264 runs at its default CRF 23, as the reference writes: a few levels of 255 on average).
  int rc = 0;
  const std::string raw = run("ffmpeg -v error -i '" + path + "' -frames:v 1 -f rawvideo -pix_fmt rgb24 -", &rc);
  REQUIRE(rc == 0);
  REQUIRE(raw.size() == 64u * 96u * 3u);
  const at::Tensor decoded = at::from_blob(const_cast<char*>(raw.data()), {64, 96, 3}, at::kByte).to(at::kFloat);
  const at::Tensor expected = ditgen::io::to_uint8_hwc(frames[0]).to(at::kFloat);
  const double mae = (decoded - expected).abs().mean().item<double>();
  INFO("mean abs error " << mae);
  CHECK(mae < 4.0);
}

TEST_CASE("write_mp4: NTSC and fractional frame rates, uint8 frames", "[video]") {
  require_mp4();
  require_ffprobe();
  TempDir dir;
  SECTION("23.976 -> 24000/1001") {
    const std::string path = dir.path + "/ntsc.mp4";
    write_mp4(path, gradient_clip(24, 32, 64), 23.976, tone(24000, 24000), 24000);
    auto v = probe(path, "v:0");
    CHECK(v["r_frame_rate"] == "24000/1001");
    CHECK(v["nb_read_frames"] == "24");
    CHECK(std::stod(v["duration"]) == Approx(24 * 1001.0 / 24000).margin(1001.0 / 24000));
  }
  SECTION("12.5 -> 25/2, uint8 input") {
    const std::string path = dir.path + "/half.mp4";
    const at::Tensor frames = (gradient_clip(25, 64, 96) * 255).round().to(at::kByte);
    write_mp4(path, frames, 12.5, tone(48000, 24000), 24000);
    auto v = probe(path, "v:0");
    CHECK(v["r_frame_rate"] == "25/2");
    CHECK(v["nb_read_frames"] == "25");
    CHECK(std::stod(v["duration"]) == Approx(2.0).margin(1 / 12.5));
    CHECK(std::stod(probe(path, "a:0")["duration"]) == Approx(2.0).margin(0.025));
  }
}

TEST_CASE("write_mp4: no audio track", "[video]") {
  require_mp4();
  require_ffprobe();
  TempDir dir;
  const std::string path = dir.path + "/silent.mp4";
  write_mp4(path, gradient_clip(10, 32, 32), 24.0, at::Tensor(), 24000);
  CHECK(stream_count(path) == 1);
  auto v = probe(path, "v:0");
  CHECK(v["codec_name"] == "h264");
  CHECK(v["nb_read_frames"] == "10");
}

TEST_CASE("write_mp4: refusals name the file and the reason", "[video]") {
  require_mp4();
  TempDir dir;
  using Catch::Matchers::Contains;
  const at::Tensor audio = tone(2400, 24000);
  SECTION("odd size") {
    CHECK_THROWS_WITH(write_mp4(dir.path + "/odd.mp4", gradient_clip(2, 63, 96), 24.0, audio, 24000),
                      Contains("odd.mp4") && Contains("even width and height") && Contains("96x63"));
  }
  SECTION("missing folder") {
    const std::string path = dir.path + "/missing/clip.mp4";
    CHECK_THROWS_WITH(write_mp4(path, gradient_clip(2, 32, 32), 24.0, audio, 24000),
                      Contains(path) && Contains("opening the file") && Contains("No such file or directory"));
  }
  SECTION("a folder in the way") {
    fs::create_directory(dir.path + "/taken.mp4");
    CHECK_THROWS_WITH(write_mp4(dir.path + "/taken.mp4", gradient_clip(2, 32, 32), 24.0, audio, 24000),
                      Contains("taken.mp4") && Contains("Is a directory"));
  }
  SECTION("device full mid-way") {
    CHECK_THROWS_WITH(write_mp4("/dev/full", gradient_clip(8, 32, 32), 24.0, audio, 24000),
                      Contains("/dev/full") && Contains("No space left on device"));
  }
  SECTION("AAC refuses the sample rate") {
    CHECK_THROWS_WITH(write_mp4(dir.path + "/rate.mp4", gradient_clip(2, 32, 32), 24.0, audio, 1234),
                      Contains("rate.mp4") && Contains("1234 Hz"));
  }
  SECTION("bad shapes") {
    CHECK_THROWS_WITH(write_mp4(dir.path + "/s.mp4", at::rand({3, 32, 32}), 24.0, audio, 24000), Contains("[F, 3, H, W]"));
    CHECK_THROWS_WITH(write_mp4(dir.path + "/s.mp4", gradient_clip(2, 32, 32), 24.0, at::rand({1, 100}), 24000),
                      Contains("[2, S]"));
    CHECK_THROWS_WITH(write_mp4(dir.path + "/s.mp4", gradient_clip(2, 32, 32), 0.0, audio, 24000), Contains("frame rate"));
  }
  std::vector<std::string> left = dir.names();  // nothing of write_mp4's own beside what the test made
  left.erase(std::remove(left.begin(), left.end(), "taken.mp4"), left.end());
  CHECK(left.empty());
}

TEST_CASE("write_mp4 through OutputFiles: a failed write leaves no file", "[video]") {
  require_mp4();
  TempDir dir;
  {
    ditgen::io::OutputFiles out;
    const std::string tmp = out.add_path(dir.path + "/clip.mp4");
    CHECK_THROWS_AS(write_mp4(tmp, gradient_clip(2, 32, 32), 24.0, tone(2400, 24000), 1234), ditgen::Error);
  }
  CHECK(dir.names().empty());
  {
    ditgen::io::OutputFiles out;
    write_mp4(out.add_path(dir.path + "/clip.mp4"), gradient_clip(2, 32, 32), 24.0, tone(2400, 24000), 24000);
    out.commit();
  }
  CHECK(dir.names() == std::vector<std::string>{"clip.mp4"});
}

TEST_CASE("write_mp4 in a build without FFmpeg names the way out", "[video]") {
  if (ditgen::io::mp4_supported()) return;
  CHECK_THROWS_WITH(write_mp4("x.mp4", gradient_clip(2, 32, 32), 24.0, at::Tensor(), 24000),
                    Catch::Matchers::Contains("--save-frames") && Catch::Matchers::Contains("DITGEN_FFMPEG"));
}

TEST_CASE("h264_roundtrip: one frame through libx264 and back, deterministic, lossier with the CRF",
          "[video]") {
  if (!ditgen::io::mp4_supported()) {
    CHECK_THROWS_WITH(ditgen::io::h264_roundtrip(at::zeros({8, 8, 3}, at::kByte), 33),
                      Catch::Matchers::Contains("--image-crf 0"));
    return;
  }
  // A smooth gradient with a sharp square: H.264 keeps it close, more so at a low CRF.
  at::Tensor img =
      (at::arange(64 * 96 * 3, at::kFloat).reshape({64, 96, 3}) * 0.04).remainder(200).to(at::kByte);
  img.narrow(0, 16, 16).narrow(1, 32, 16).fill_(250);
  auto mean_error = [&](const at::Tensor& out) {
    return (out.to(at::kFloat) - img.to(at::kFloat)).abs().mean().item<double>();
  };
  const at::Tensor fine = ditgen::io::h264_roundtrip(img, 1), coarse = ditgen::io::h264_roundtrip(img, 40);
  REQUIRE(fine.sizes() == img.sizes());
  CHECK(fine.scalar_type() == at::kByte);
  CHECK(mean_error(fine) < 4.0);  // yuv420p's chroma subsampling alone costs a little
  CHECK(mean_error(coarse) > mean_error(fine));
  CHECK(at::equal(ditgen::io::h264_roundtrip(img, 33),
                  ditgen::io::h264_roundtrip(img, 33)));  // every rank alike
  CHECK_THROWS_WITH(ditgen::io::h264_roundtrip(img.narrow(0, 0, 63), 33), Catch::Matchers::Contains("even"));
  CHECK_THROWS_WITH(ditgen::io::h264_roundtrip(img, 0), Catch::Matchers::Contains("--image-crf"));
}

TEST_CASE("wav_bytes: 16-bit PCM stereo, header fields and samples", "[video]") {
  at::Tensor audio = at::zeros({2, 100});
  audio[0][0] = 1.5;     // clipped -> 32767
  audio[1][0] = -0.5;    // -16383.5 -> -16384 (half to even)
  audio[0][1] = 0.25;    // 8191.75 -> 8192
  audio[1][1] = -2.0;    // clipped -> -32767
  const std::string wav = wav_bytes(audio, 24000);
  auto u32 = [&](size_t at) {
    return static_cast<uint32_t>(static_cast<uint8_t>(wav[at])) | static_cast<uint32_t>(static_cast<uint8_t>(wav[at + 1])) << 8 |
           static_cast<uint32_t>(static_cast<uint8_t>(wav[at + 2])) << 16 | static_cast<uint32_t>(static_cast<uint8_t>(wav[at + 3])) << 24;
  };
  auto u16 = [&](size_t at) { return static_cast<uint16_t>(u32(at) & 0xffff); };
  auto s16 = [&](size_t at) { return static_cast<int16_t>(u16(at)); };
  REQUIRE(wav.size() == 44u + 100u * 4u);
  CHECK(wav.substr(0, 4) == "RIFF");
  CHECK(u32(4) == 36u + 400u);
  CHECK(wav.substr(8, 8) == "WAVEfmt ");
  CHECK(u32(16) == 16u);
  CHECK(u16(20) == 1);  // PCM
  CHECK(u16(22) == 2);
  CHECK(u32(24) == 24000u);
  CHECK(u32(28) == 96000u);
  CHECK(u16(32) == 4);
  CHECK(u16(34) == 16);
  CHECK(wav.substr(36, 4) == "data");
  CHECK(u32(40) == 400u);
  CHECK(s16(44) == 32767);
  CHECK(s16(46) == -16384);
  CHECK(s16(48) == 8192);
  CHECK(s16(50) == -32767);
  CHECK(s16(52) == 0);

  CHECK_THROWS_WITH(wav_bytes(at::zeros({1, 10}), 24000), Catch::Matchers::Contains("[2, S]"));
}

TEST_CASE("wav_bytes: a 2 s tone reads back as 2 s of 24 kHz stereo", "[video]") {
  require_ffprobe();
  TempDir dir;
  const std::string path = dir.path + "/tone.wav";
  ditgen::io::write_file_atomic(path, wav_bytes(tone(48000, 24000), 24000));
  auto a = probe(path, "a:0");
  CHECK(a["codec_name"] == "pcm_s16le");
  CHECK(a["channels"] == "2");
  CHECK(a["sample_rate"] == "24000");
  CHECK(std::stod(a["duration"]) == Approx(2.0).margin(1e-6));
}
