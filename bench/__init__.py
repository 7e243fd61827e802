"""Reproducible benchmarks of the aftersales service and their bulk data generator.

    python -m bench --quick          # seconds: small SQLite data set, 3-second scenarios (CI)
    python -m bench                  # full: see `python -m bench --help`
    python -m bench.generate --help  # the data generator on its own
"""
