"""Side-by-side benchmarks of sandboxrunner and its peers, in one run, on one Redis.

`python -m benchmarks` starts one throwaway server, then for each system starts its
workers as separate processes, measures, stops them and empties the server before the
next. Modules:

  cli.py          flags, the order of the sections, the run as a whole
  harness.py      the server, worker processes (own process group, always killed),
                  bounded waits, percentiles, result records
  variant.py      the interface every measured system implements
  sandboxrunner_bench.py  sandboxrunner: supervisor subprocess + in-process client,
                  timeout recovery and scale
  peers/          one module per peer (`*_bench.py`) plus the app its workers import
  jobs/           the job files the benchmark supervisors load (noop and friends)
  report.py       the rich tables, the ratios and the JSON files in results/
"""
