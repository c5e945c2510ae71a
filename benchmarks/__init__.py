"""Speed and quality benchmarks; run each as ``python -m benchmarks.<name>`` (see README.md)."""
