"""The rows of perf/README.md: each figure with its seed target (as text) and our goals. No I/O.

Pass or fail is decided by "our goal", the last column of the README's table; the seed target is
shown beside it for reference. A figure without goals is shown as information (a latency
distribution beside a throughput goal) but must still be measured.
"""

from __future__ import annotations

from mabeam.perf.results import FigureSpec, Goal, RowSpec

__all__ = ["ROWS", "ROW_NAMES"]


def _at_least(value: float, stat: str | None = None) -> Goal:
    return Goal(">=", value, stat)


def _at_most(value: float, stat: str | None = None) -> Goal:
    return Goal("<=", value, stat)


_OF_RAW = Goal(">=", 0.8, of_limit=True)

_ROWS = (
    RowSpec(
        "agent_creation",
        "a client process spawns `demo` agents over P.ctl.spawn (created = spawn reply, then "
        "`_ping` answered): many with 64 in flight, then one at a time; memory = runner RSS "
        "growth / agents up to 10,000 agents",
        (
            FigureSpec(
                "rate", "creation rate, 64 in flight", "/s", "1000/s", (_at_least(2000),), "higher"
            ),
            FigureSpec(
                "latency",
                "creation latency, one at a time",
                "ms",
                "avg 1 ms, max 10 ms",
                (_at_most(1, "avg"),),
                "lower",
            ),
            FigureSpec(
                "memory", "runner memory per agent", "KB", "≤ 1 MB/agent", (_at_most(16),), "lower"
            ),
        ),
    ),
    RowSpec(
        "agent_action",
        "(a) a client process calls `increment` on 100 agents of one runner, 256 in flight; "
        "(b) an agent calls another agent of the same runner (local fast path), timed inside",
        (
            FigureSpec(
                "wire_rate",
                "wire calls, 256 in flight",
                "/s",
                "10k/s",
                (_at_least(10_000), _OF_RAW),
                "higher",
            ),
            FigureSpec(
                "wire_latency",
                "wire call latency, 256 in flight",
                "ms",
                "avg 0.1 ms, max 5 ms",
                (),
                "lower",
            ),
            FigureSpec("wire_success", "wire calls answered ok", "%", "99 %", (_at_least(100),)),
            FigureSpec(
                "local_rate",
                "in-runner calls, 64 concurrent callers",
                "/s",
                "10k/s",
                (_at_least(100_000),),
                "higher",
            ),
            FigureSpec(
                "local_latency",
                "in-runner call latency, one at a time",
                "µs",
                "avg 100 µs",
                (_at_most(20, "avg"),),
                "lower",
            ),
        ),
    ),
    RowSpec(
        "agent_action_durable",
        "a client process calls `increment` on 100 `demo` agents (they snapshot; a reply "
        "leaves once the snapshot with its effect is stored), 256 in flight",
        (
            FigureSpec(
                "rate",
                "durable wire calls, 256 in flight",
                "/s",
                "—",
                (Goal(">=", 0.5, of_limit=True),),
                "higher",
            ),
            FigureSpec(
                "latency", "durable wire call latency, 256 in flight", "ms", "—", (), "lower"
            ),
            FigureSpec("success", "durable wire calls answered ok", "%", "—", (_at_least(100),)),
            FigureSpec(
                "vs_raw_durable",
                "durable wire calls beside nats-py storing each call",
                "/s",
                "—",
                (),
                "higher",
            ),
        ),
    ),
    RowSpec(
        "agent_lifecycle",
        "spawn → `_ping` → `_stop` → key gone from KV, cycles one at a time and 32 in flight",
        (
            FigureSpec(
                "latency",
                "cycle time, one at a time",
                "ms",
                "avg 2 ms, max 20 ms",
                (_at_most(2, "avg"),),
                "lower",
            ),
            FigureSpec("rate", "cycles, 32 in flight", "/s", "500/s", (_at_least(1000),), "higher"),
            FigureSpec("success", "cycles completed", "%", "98 %", (_at_least(100),)),
        ),
    ),
    RowSpec(
        "virtual_agents",
        "a client process calls `demo` virtual agents of one runner: first calls (activation) to"
        " fresh keys; then `increment` on 100 active ones (owner known from the replica) beside"
        " direct calls to 100 spawned `demo` agents, and through P.virtual, 256 in flight",
        (
            FigureSpec(
                "first_latency",
                "first call (activation), one at a time",
                "ms",
                "—",
                (_at_most(3, "p50"),),
                "lower",
            ),
            FigureSpec(
                "spawned_latency",
                "spawn, then first call (no virtual agent), one at a time",
                "ms",
                "—",
                (),
                "lower",
            ),
            FigureSpec("first_rate", "first calls, 64 in flight", "/s", "—", (), "higher"),
            FigureSpec("direct_rate", "direct calls, 256 in flight", "/s", "—", (), "higher"),
            FigureSpec(
                "active_rate",
                "active virtual calls, 256 in flight",
                "/s",
                "—",
                (_OF_RAW,),
                "higher",
            ),
            FigureSpec(
                "routed_rate", "calls through P.virtual, 256 in flight", "/s", "—", (), "higher"
            ),
        ),
    ),
    RowSpec(
        "virtual_passivation",
        "a client process calls `increment` once on each of 100,000 `demo` virtual agents, 64 in"
        " flight, through one runner that passivates them after 2 s idle",
        (
            FigureSpec("rate", "keys called per second", "/s", "—", (), "higher"),
            FigureSpec(
                "resident", "most agents resident at once", "", "—", (_at_most(10_000),), "lower"
            ),
            FigureSpec("rss", "runner RSS at its peak", "MB", "—", (), "lower"),
            FigureSpec(
                "rss_growth",
                "RSS after all keys ÷ after a tenth of them",
                "x",
                "—",
                (_at_most(1.25),),
                "lower",
            ),
        ),
    ),
    RowSpec(
        "rebalancing",
        "a runner joins one that hosts 1000 `demo` agents while a client process calls"
        " `increment` on them, 64 in flight, until the two runners' agents are within 20 %",
        (
            FigureSpec("moved_rate", "agents moved per second", "/s", "—", (), "higher"),
            FigureSpec("balanced", "join → within 20 %", "s", "—", (), "lower"),
            FigureSpec("failed", "client calls failed meanwhile", "", "—", (_at_most(0),), "lower"),
            FigureSpec("call_latency", "call latency meanwhile", "ms", "—", (), "lower"),
            FigureSpec("call_rate", "calls per second meanwhile", "/s", "—", (), "higher"),
        ),
    ),
    RowSpec(
        "reminders",
        "a client process asks 1000 `demo` agents of one runner for `schedule_increment` after"
        " 3 s (one JetStream message schedule each), 64 in flight, then times the acknowledged"
        " firings and reads every counter",
        (
            FigureSpec("set_rate", "reminders set per second", "/s", "—", (), "higher"),
            FigureSpec(
                "fire_rate", "firings per second, first due → last acked", "/s", "—", (), "higher"
            ),
            FigureSpec("lag", "last due → last firing acked", "s", "—", (), "lower"),
            FigureSpec("once", "firings that took effect once", "%", "—", (_at_least(100),)),
        ),
    ),
    RowSpec(
        "system_startup",
        "`mabeam runner` process start → answering P.ctl.runners; init = Runner.start() "
        "(connect, buckets, replicas, subscriptions); overhead = idle runner RSS - RSS of a "
        "bare `python -c 'import <its dependencies>'`",
        (
            FigureSpec(
                "init", "component init (fresh system)", "ms", "50 ms", (_at_most(50),), "lower"
            ),
            FigureSpec(
                "ready",
                "process start → answering P.ctl.runners",
                "ms",
                "200 ms",
                (Goal("<=", 1.5, of_limit=True),),
                "lower",
            ),
            FigureSpec(
                "overhead", "idle runner RSS above bare imports", "MB", "10 MB", (_at_most(10),)
            ),
        ),
    ),
    RowSpec(
        "system_coordination",
        "majority consensus among `demo` agents through the `coordinator` agent over the wire; "
        "scalability = time per participant at 50 ÷ at 5",
        (
            FigureSpec(
                "latency",
                "consensus of 5, one at a time",
                "ms",
                "5 ms",
                (_at_most(2, "p50"),),
                "lower",
            ),
            FigureSpec(
                "rate",
                "consensus rounds, 16 in flight",
                "/s",
                "1000 ops/s",
                (_at_least(1000),),
                "higher",
            ),
            FigureSpec(
                "success", "rounds accepted with every vote", "%", "98 %", (_at_least(100),)
            ),
            FigureSpec("scaling", "time per participant, 50 ÷ 5", "x", "1.2", (_at_most(1.2),)),
        ),
    ),
    RowSpec(
        "system_load",
        "1000 agents; a client process offers a mixed load (60 % actions, 30 % events, 10 % "
        "registry queries) at 5000 ops/s",
        (
            FigureSpec(
                "rate", "ops completed ok per second", "/s", "5000 ops/s", (_at_least(5000),)
            ),
            FigureSpec(
                "success",
                "ops completed ok (events: delivered)",
                "%",
                "95 % stability",
                (_at_least(100),),
            ),
            FigureSpec(
                "degradation",
                "throughput drop, last window vs first",
                "%",
                "≤ 10 %",
                (_at_most(10),),
            ),
            FigureSpec(
                "action_latency", "action latency under load", "ms", "—", (_at_most(10, "p99"),)
            ),
            FigureSpec(
                "event_latency",
                "event latency under load (ce-time → handler)",
                "ms",
                "—",
                (_at_most(10, "p99"),),
            ),
        ),
    ),
    RowSpec(
        "system_memory",
        "runner RSS at growing agent counts (linear fit); RSS growth over a soak at constant load",
        (
            FigureSpec(
                "r2", "linearity of RSS against agents (R²)", "", "linear", (_at_least(0.99),)
            ),
            FigureSpec(
                "per_agent", "RSS slope per agent", "KB", "≤ 1 MB/agent", (_at_most(16),), "lower"
            ),
            FigureSpec(
                "soak_growth",
                "RSS growth over the soak's second half",
                "%",
                "≤ 5 %",
                (_at_most(2),),
            ),
        ),
    ),
    RowSpec(
        "event_system",
        "a client process publishes 10,000 events/s to a subscriber agent on a runner; "
        "latency = ce-time → handler entry; peak = flat-out publishing",
        (
            FigureSpec(
                "rate",
                "events delivered per second at 10k/s offered",
                "/s",
                "10k/s",
                (_at_least(10_000),),
                "higher",
            ),
            FigureSpec(
                "latency",
                "ce-time → handler entry at 10k/s",
                "ms",
                "avg 1 ms, max 10 ms",
                (_at_most(1, "p50"), _at_most(10, "p99")),
                "lower",
            ),
            FigureSpec("delivered", "events delivered at 10k/s", "%", "95 %", (_at_least(100),)),
            FigureSpec(
                "peak", "peak delivered rate, flat-out publisher", "/s", "—", (_OF_RAW,), "higher"
            ),
            FigureSpec(
                "publish",
                "events published per second, flat out, one client process",
                "/s",
                "—",
                (Goal(">=", 0.5, of_limit=True),),
                "higher",
            ),
        ),
    ),
    RowSpec(
        "event_propagation",
        "one event to N subscriber agents of one runner on one pattern; time from the runner's "
        "decode of the event to the last subscriber's handler entry",
        (
            FigureSpec(
                "per_subscriber",
                "time per subscriber at 1000",
                "µs",
                "10 µs",
                (_at_most(10),),
                "lower",
            ),
            FigureSpec(
                "matching",
                "decoded event → its one pattern subscriber",
                "µs",
                "50 µs",
                (_at_most(50),),
                "lower",
            ),
            FigureSpec("scaling", "time per subscriber, 1000 ÷ 100", "x", "1.1", (_at_most(1.1),)),
        ),
    ),
    RowSpec(
        "event_stress",
        "a client process publishes 8,000 events/s sustained, then bursts of 15,000 events/s, to a "
        "subscriber agent; delivery counted by the agent, RSS read from /proc",
        (
            FigureSpec(
                "sustained", "delivered at 8k/s sustained", "%", "95 % stability", (_at_least(100),)
            ),
            FigureSpec(
                "bursts", "delivered in 15k/s bursts", "%", "95 % stability", (_at_least(99),)
            ),
            FigureSpec(
                "rss_growth", "runner RSS growth", "%", "90 % memory stability", (_at_most(5),)
            ),
            FigureSpec(
                "burst_rate",
                "publish rate reached in bursts",
                "/s",
                "15k/s",
                (_at_least(15_000),),
                "higher",
            ),
        ),
    ),
    RowSpec(
        "event_durable",
        "a client process publishes events flat out to a `bench_ledger` agent whose durable "
        "handler counts them, one in flight, each acked once its snapshot is stored; timed until "
        "all are counted",
        (
            FigureSpec(
                "rate",
                "events handled per second by a durable handler",
                "/s",
                "—",
                (Goal(">=", 0.5, of_limit=True),),
                "higher",
            ),
            FigureSpec("once", "events counted exactly once", "%", "—", (_at_least(100),)),
        ),
    ),
    RowSpec(
        "registry",
        "lookups in a runner's watch-fed replica (timed inside); register / unregister through "
        "KV from a client process; concurrent ops; a change seen by 3 replicas in 3 processes",
        (
            FigureSpec(
                "lookup_id", "lookup by id", "µs", "0.1 ms", (_at_most(10, "p50"),), "lower"
            ),
            FigureSpec(
                "lookup_capability",
                "lookup by capability",
                "µs",
                "0.1 ms",
                (_at_most(10, "p50"),),
                "lower",
            ),
            FigureSpec(
                "register", "register through KV", "ms", "0.5 ms", (_at_most(0.5, "p50"),), "lower"
            ),
            FigureSpec(
                "unregister",
                "unregister through KV",
                "ms",
                "0.5 ms",
                (_at_most(0.5, "p50"),),
                "lower",
            ),
            FigureSpec(
                "ops",
                "concurrent registry ops, 64 in flight",
                "/s",
                "5000 ops/s",
                (_at_least(5000),),
                "higher",
            ),
            FigureSpec(
                "propagation",
                "change visible in every replica",
                "ms",
                "—",
                (_at_most(5, "p50"),),
                "lower",
            ),
        ),
    ),
    RowSpec(
        "registry_scalability",
        "the registry figures with 100 and with 10,000 agents registered; replica memory = "
        "runner RSS growth / records",
        (
            FigureSpec(
                "degradation",
                "worst degradation, 10k vs 100 agents",
                "%",
                "≤ 15 %",
                (_at_most(15),),
            ),
            FigureSpec("agents", "agents registered", "", "10k agents", (_at_least(10_000),)),
            FigureSpec(
                "replica_memory",
                "replica memory per agent",
                "B",
                "80 % efficiency",
                (_at_most(1024),),
            ),
        ),
    ),
    RowSpec(
        "resource_limits",
        "a runner with --max-agents and --max-memory: spawns past either limit, calls to "
        "existing agents meanwhile, recovery once the pressure ends",
        (
            FigureSpec("refused", "spawns past a limit answered 429", "%", "—", (_at_least(100),)),
            FigureSpec(
                "function",
                "call throughput under limits vs unloaded",
                "%",
                "80 %",
                (_at_least(80),),
            ),
            FigureSpec(
                "recovery",
                "pressure ends → a spawn succeeds",
                "ms",
                "1 s",
                (_at_most(1000),),
                "lower",
            ),
            FigureSpec("crashes", "runner or agent crashes", "", "—", (_at_most(0),)),
        ),
    ),
    RowSpec(
        "scale_out",
        "the same load (two client processes, 128 calls in flight each, on 100 "
        "`bench_counter` agents spread evenly) on 1, 2 and 4 runner processes of one machine, "
        "then on 2 runners of a NATS cluster of 3 on the same machine; the CPU of every process "
        "meanwhile names what saturates",
        (
            FigureSpec("rate_1", "calls/s with 1 runner", "/s", "—", (), "higher"),
            FigureSpec("rate_2", "calls/s with 2 runners", "/s", "—", (), "higher"),
            FigureSpec("rate_4", "calls/s with 4 runners", "/s", "—", (), "higher"),
            FigureSpec("growth", "throughput with 4 runners / with 1", "x", "—", ()),
            FigureSpec(
                "rate_cluster",
                "calls/s with 2 runners on a NATS cluster of 3",
                "/s",
                "—",
                (),
                "higher",
            ),
        ),
    ),
)

ROWS: dict[str, RowSpec] = {row.name: row for row in _ROWS}
"""Every row of perf/README.md by name, in its order."""
ROW_NAMES: tuple[str, ...] = tuple(ROWS)
"""The row names in perf/README.md's order."""
