"""The fault suite: a wire-only harness, a workload of identified operations, faults, a checker.

In the spirit of Jepsen: real `mabeam runner` processes and a real nats-server are driven only
through the wire (raw nats-py) and the CLI, one fault at a time is injected while clients run
identified `add_message` calls, everything observable is recorded into a `History`, and a pure
function (`checker.check`) judges it afterwards.
"""
