// wav_diff A.wav B.wav [max [mean]]: exit 0 when both 16-bit PCM WAV files have the same format and length,
// no sample differs by more than `max` (default 0) steps of 1/32767 and, given `mean`, the mean difference
// is at most `mean` steps.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

namespace {
// The bytes of the "data" chunk and the "fmt " chunk's first 16 bytes; false when not a RIFF WAVE file.
bool read_wav(const char* path, std::string& fmt, std::string& data) {
  std::ifstream f(path, std::ios::binary);
  const std::string b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (b.size() < 12 || b.compare(0, 4, "RIFF") != 0 || b.compare(8, 4, "WAVE") != 0) return false;
  for (size_t pos = 12; pos + 8 <= b.size();) {
    uint32_t n = 0;
    std::memcpy(&n, b.data() + pos + 4, 4);
    if (pos + 8 + n > b.size()) return false;
    if (b.compare(pos, 4, "fmt ") == 0 && n >= 16) fmt = b.substr(pos + 8, 16);
    if (b.compare(pos, 4, "data") == 0) data = b.substr(pos + 8, n);
    pos += 8 + n + (n & 1);
  }
  return fmt.size() == 16 && !data.empty();
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: wav_diff A.wav B.wav [max [mean]]\n");
    return 2;
  }
  const int max_diff = argc > 3 ? std::atoi(argv[3]) : 0;
  const double mean_bound = argc > 4 ? std::atof(argv[4]) : 65535.0;
  std::string fa, da, fb, db;
  if (!read_wav(argv[1], fa, da) || !read_wav(argv[2], fb, db)) {
    std::fprintf(stderr, "wav_diff: cannot read a WAV file from %s or %s\n", argv[1], argv[2]);
    return 2;
  }
  if (fa != fb || da.size() != db.size()) {
    std::fprintf(stderr, "wav_diff: formats or lengths differ (%zu vs %zu data bytes)\n", da.size(), db.size());
    return 1;
  }
  int worst = 0;
  double sum = 0;
  for (size_t i = 0; i + 1 < da.size(); i += 2) {
    int16_t a, b;
    std::memcpy(&a, da.data() + i, 2);
    std::memcpy(&b, db.data() + i, 2);
    const int d = std::abs(static_cast<int>(a) - static_cast<int>(b));
    worst = std::max(worst, d);
    sum += d;
  }
  const double mean = da.size() >= 2 ? sum / static_cast<double>(da.size() / 2) : 0.0;
  std::printf("wav_diff: %zu samples, max difference %d, mean %.3f\n", da.size() / 2, worst, mean);
  return worst <= max_diff && mean <= mean_bound ? 0 : 1;
}
