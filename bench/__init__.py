"""orchestrate's benchmarks: figures against a baseline measured in the same run.

    python -m bench                  # everything, on the local test bed (root)
    python -m bench --quick          # small sizes, few runs: a breakage check for CI
    python -m bench --only B1,B4     # some of them

Benchmarks, not timed tests: nothing here asserts a time. Each prints a table row (figure,
baseline, ratio, goal, met or not) and the run writes the same as JSON to
bench/results/results.json. See bench/run.py for the list.
"""
