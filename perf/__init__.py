"""The performance suite behind `mabeam perf`: every row of perf/README.md, measured for real.

The suite (`mabeam.perf.suite`) starts one nats-server, then for each row starts `mabeam runner`
processes and load-generator workers (`mabeam.perf.worker`) as separate OS processes, and
measures the raw nats-py limit of the same message pattern on the same server in the same run
(`mabeam.perf.raw`). perf/README.md, beside this code, defines and explains each row.
"""
