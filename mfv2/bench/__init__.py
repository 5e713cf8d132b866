"""Speed: the latency harness, GEMM peak probe, FLOPs, environment capture, the bench matrix, its
report and the demo."""
