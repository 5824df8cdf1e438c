// png_diff A.png B.png [max [mean]]: exit 0 when both images have the same size, no channel differs by
// more than `max` (default 1, i.e. 1/255) and, given `mean`, the mean channel difference is at most
// `mean`/255 (for outputs that may differ at a few pixels, such as FP8 under TP).
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: png_diff A.png B.png [max [mean]]\n");
    return 2;
  }
  const int max_diff = argc > 3 ? std::atoi(argv[3]) : 1;
  const double mean_bound = argc > 4 ? std::atof(argv[4]) : 255.0;
  int wa, ha, ca, wb, hb, cb;
  unsigned char* a = stbi_load(argv[1], &wa, &ha, &ca, 3);
  unsigned char* b = stbi_load(argv[2], &wb, &hb, &cb, 3);
  if (!a || !b) {
    std::fprintf(stderr, "png_diff: cannot read %s\n", !a ? argv[1] : argv[2]);
    return 2;
  }
  if (wa != wb || ha != hb) {
    std::fprintf(stderr, "png_diff: sizes differ: %dx%d vs %dx%d\n", wa, ha, wb, hb);
    return 1;
  }
  int worst = 0;
  long differing = 0, sum = 0;
  const long n = static_cast<long>(wa) * ha * 3;
  for (long i = 0; i < n; ++i) {
    const int d = std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i]));
    worst = d > worst ? d : worst;
    differing += d > 0;
    sum += d;
  }
  const double mean = n > 0 ? static_cast<double>(sum) / static_cast<double>(n) : 0.0;
  std::printf("png_diff: %dx%d, max channel difference %d/255, mean %.3f/255, %ld values differ\n", wa, ha, worst,
              mean, differing);
  stbi_image_free(a);
  stbi_image_free(b);
  return worst <= max_diff && mean <= mean_bound ? 0 : 1;
}
