"""Benchmark harness: cargobay vs the reference registry (distribution). See bench/run.py."""
