"""The scenarios, one module per family of rows; each holds the row's orchestration (run in the
`mabeam perf` process) and its load generators (run as worker processes)."""
