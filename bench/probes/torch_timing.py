"""What the Python probes share: a CUDA-event timer around repeated calls."""
import torch


def timed(fn, iters):
    """Microseconds per call of `fn` over `iters` calls, after one untimed call."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters * 1e3
