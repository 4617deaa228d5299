"""One benchmark adapter per source (scripts/bench_common.BenchSource): ``make(args)``."""
