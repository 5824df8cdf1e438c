#pragma once
// Stand-in for a header that only CUDA builds of LibTorch generate; lets test/check_cuda_syntax.sh
// parse the CUDA-only sources against the CPU LibTorch's headers.
