"""Model files made here rather than downloaded: synthetic GGUFs for tests and benchmarks."""
