"""Benchmarks: each writes a results file under results/ that report.py renders into docs/performance.md."""
