// png_diff A.png B.png [max]: exit 0 when both images have the same size and no channel differs by
// more than `max` (default 1, i.e. 1/255).
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: png_diff A.png B.png [max]\n");
    return 2;
  }
  const int max_diff = argc > 3 ? std::atoi(argv[3]) : 1;
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
  long differing = 0;
  for (long i = 0; i < static_cast<long>(wa) * ha * 3; ++i) {
    const int d = std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i]));
    worst = d > worst ? d : worst;
    differing += d > 0;
  }
  std::printf("png_diff: %dx%d, max channel difference %d/255, %ld values differ\n", wa, ha, worst, differing);
  stbi_image_free(a);
  stbi_image_free(b);
  return worst <= max_diff ? 0 : 1;
}
