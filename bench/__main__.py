"""`python -m bench`: boot dmrelay, run every scenario, print the table, write the JSON."""

import argparse
import asyncio
import atexit
import dataclasses
import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import fixtures, report
from bench.loadgen import require_wrk
from bench.scenarios import (
    accept,
    customer_webhooks,
    delivery,
    hot_chat,
    latency,
    media,
    scale,
    scale_out,
    soak,
    webhook,
)
from bench.stack import ROOT, Stack

SCENARIOS = (
    "accept",
    "latency",
    "delivery",
    "rate_limit",
    "webhook",
    "scale",
    "customer_webhooks",
    "media",
    "hot_chat",
    "scale_out",
    # Only with --soak-minutes.
    "soak",
)


@dataclass(frozen=True)
class Plan:
    """How long and how big each scenario runs."""

    accept_seconds: float
    accept_rounds: int
    latency_seconds: float
    delivery_messages: int
    delivery_timeout: float
    spread_profiles: int
    rate_limit_seconds: float
    webhook_seconds: float
    webhook_settle_seconds: float
    scale_stages: list[tuple[int, int]]
    scale_requests: int
    # Customer webhooks: endpoints × events for throughput; groups, events/s and seconds for
    # latency (with, then without, a hanging endpoint).
    hooks_endpoints: int = 20
    hooks_events: int = 500
    hooks_groups: int = 10
    hooks_rate: float = 500
    hooks_seconds: float = 10
    hooks_timeout: float = 60
    media_chats: int = 1000
    # Hot chat: seconds per run, rounds of (dmrelay, floor) × (one chat, many).
    hot_seconds: float = 6
    hot_rounds: int = 2
    # Scale out: rounds of (1 API, 1 worker), (2, 2) … (scale_out_max, scale_out_max); accept
    # seconds; messages delivered; then, at Meta's latency, 1 … scale_out_max workers
    # delivering over this many chats per spread profile.
    scale_out_rounds: int = 2
    scale_out_seconds: float = 8
    scale_out_messages: int = 6_000
    scale_out_max: int = 3
    scale_out_latency_chats: int = 8
    scale_out_latency_messages: int = 6_000


FULL = Plan(
    accept_seconds=10,
    accept_rounds=3,
    latency_seconds=20,
    # More than one worker delivers in delivery_timeout: it never runs dry.
    delivery_messages=9_000,
    delivery_timeout=25,
    spread_profiles=50,
    rate_limit_seconds=10,
    webhook_seconds=20,
    webhook_settle_seconds=60,
    # Few enough chats at 10 k that a typical one fills a page (22 messages), as at 1 M (89).
    scale_stages=[(400, 10_000), (10_000, 1_000_000)],
    scale_requests=200,
    # Video sends are paced at Meta's 10/s: about 100 s.
    media_chats=1_000,
)
QUICK = Plan(
    accept_seconds=4,
    accept_rounds=1,
    latency_seconds=5,
    delivery_messages=600,
    delivery_timeout=10,
    spread_profiles=10,
    rate_limit_seconds=3,
    webhook_seconds=6,
    webhook_settle_seconds=15,
    scale_stages=[(400, 10_000), (2_000, 100_000)],
    scale_requests=50,
    hooks_events=100,
    hooks_rate=200,
    hooks_seconds=4,
    hooks_timeout=20,
    media_chats=100,
    hot_seconds=3,
    hot_rounds=1,
    scale_out_rounds=1,
    scale_out_seconds=3,
    scale_out_messages=600,
    scale_out_max=2,
    scale_out_latency_messages=1_000,
)
LATENCY_RATE = 100
MAIN_CHATS = 100


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def run(plan: Plan, only: set[str], args: argparse.Namespace, results: dict) -> None:
    stack = Stack(
        log_dir=ROOT / "bench" / "results" / "logs",
        app_dir=args.app_dir,
        api_processes=args.api_workers,
        workers=args.workers,
    )
    # The configurations the scale-out scenario compares: 1/1, 2/2 … and N/M if larger.
    scaled = [(k, k) for k in range(1, plan.scale_out_max + 1)]
    if (args.api_workers, args.workers) not in scaled and max(args.api_workers, args.workers) > 1:
        scaled.append((args.api_workers, args.workers))
    scale_out_options = scale_out.Options(
        configs=scaled,
        rounds=plan.scale_out_rounds,
        seconds=plan.scale_out_seconds,
        messages=plan.scale_out_messages,
        timeout=plan.delivery_timeout,
        cpu_per_process=args.cpu_per_process,
        latency_ms=args.meta_latency_ms,
        latency_workers=list(range(1, max(plan.scale_out_max, args.workers) + 1)),
        latency_chats_per_profile=plan.scale_out_latency_chats,
        latency_messages=plan.scale_out_latency_messages,
    )
    fx: fixtures.Fixtures | None = None  # made below, if a scenario needs it
    atexit.register(stack.stop_all)  # also on an exit that skips the finally below
    try:
        progress("fresh database and queue, sandbox and API starting")
        await stack.open()
        results["machine"] = await report.machine(stack)
        # Profiles made with the CLI take minutes on a busy machine: made only if a scenario
        # uses them (customer_webhooks makes its own).
        if only - {"customer_webhooks"} or args.profile_accept:
            progress(f"creating {plan.spread_profiles + 1} profiles with the CLI, and chats")
            fx = await fixtures.create(stack, plan.spread_profiles, MAIN_CHATS)
        # Two chats per profile, so that no profile (nor its rate cap) dominates.
        spread_chats = [chat for profile in fx.spread for chat in profile.chats[:2]] if fx else []
        # (scenario, result key, step): "delivery" measures twice, with 1 and many profiles.
        steps = [
            ("accept", "accept",
             lambda: accept.run(stack, fx, plan.accept_seconds, plan.accept_rounds)),
            ("latency", "latency",
             lambda: latency.run(stack, fx, spread_chats, LATENCY_RATE, plan.latency_seconds)),
            ("delivery", "delivery_1",
             lambda: delivery.deliver_all(stack, fx, fx.main.chats, plan.delivery_messages,
                                          plan.delivery_timeout)),
            ("delivery", "delivery_many",
             lambda: delivery.deliver_all(stack, fx, spread_chats, plan.delivery_messages,
                                          plan.delivery_timeout)),
            ("rate_limit", "rate_limit",
             lambda: delivery.run_rate_limit(stack, fx, plan.rate_limit_seconds)),
            ("webhook", "webhook",
             lambda: webhook.run(stack, fx, plan.webhook_seconds, plan.webhook_settle_seconds)),
            ("scale", "scale",
             lambda: scale.run(stack, fx, plan.scale_stages, plan.scale_requests)),
            ("customer_webhooks", "customer_webhooks",
             lambda: customer_webhooks.run(stack, plan.hooks_endpoints, plan.hooks_events,
                                           plan.hooks_groups, plan.hooks_rate,
                                           plan.hooks_seconds, plan.hooks_timeout)),
            ("media", "media",
             lambda: media.run(stack, fx, plan.media_chats, plan.media_chats / 8 + 30)),
            ("hot_chat", "hot_chat",
             lambda: hot_chat.run(stack, fx, plan.hot_seconds, plan.hot_rounds)),
            ("scale_out", "scale_out",
             lambda: scale_out.run(stack, fx, spread_chats, scale_out_options)),
            ("soak", "soak",
             lambda: soak.run(stack, fx, spread_chats, args.soak_minutes)),
        ]  # fmt: skip
        for scenario, key, step in steps:
            if scenario not in only:
                continue
            progress(f"{key} …")
            started = time.monotonic()
            results["scenarios"][key] = await step()
            progress(f"{key} done in {time.monotonic() - started:.0f} s")
        if args.profile_accept:
            progress("py-spy on the API under accept load …")
            await stack.reset_messages()
            results["profile"] = await accept.profile(stack, fx, 10)
    finally:
        await stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (~5 minutes)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "latest.json",
        help="where to write the JSON (the markdown goes next to it, as .md)",
    )  # fmt: skip
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=SCENARIOS, help="run only these"
    )
    parser.add_argument(
        "--profile-accept", action="store_true",
        help="also sample the API with py-spy under accept load (needs `pip install py-spy`)",
    )  # fmt: skip
    parser.add_argument(
        "--app-dir", type=Path, default=ROOT,
        help="the dmrelay source tree to run, e.g. an export of a commit (default: this one)",
    )  # fmt: skip
    parser.add_argument(
        "--messages", type=int, default=None,
        help="measure 6's large stage: this many messages (e.g. 10000000; default 1,000,000, "
        "quick 100,000), in max(10,000, messages/100) chats",
    )  # fmt: skip
    parser.add_argument(
        "--soak-minutes", type=float, default=0,
        help="also run the soak: sustained sends and webhooks for this long, sampling the "
        "chats table's dead tuples every 30 s (default 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--api-workers", type=int, default=1, metavar="N",
        help="API processes (uvicorn --workers) for every scenario (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=1, metavar="M",
        help="dmrelay worker processes for every scenario (default 1); scale_out compares "
        "1/1, 2/2, 3/3 and N/M",
    )  # fmt: skip
    parser.add_argument(
        "--cpu-per-process", type=float, default=0.3, metavar="CORES",
        help="scale_out: each API process and worker capped at this share of a core (a "
        "cgroup v1 CPU quota, where the bench may set one; 0: uncapped; default 0.3)",
    )  # fmt: skip
    parser.add_argument(
        "--meta-latency-ms", type=int, default=100, metavar="MS",
        help="scale_out's second part: the sandbox answers each Graph call after this long, "
        "as Meta does (default 100; 0: skip the part)",
    )  # fmt: skip
    args = parser.parse_args()
    only = set(args.only)
    # The soak runs when given a length, and only then.
    if args.soak_minutes > 0:
        only.add("soak")
    elif "soak" in only and args.only is not SCENARIOS:
        parser.error("the soak needs --soak-minutes N")
    else:
        only.discard("soak")
    if only & {"accept", "webhook", "hot_chat", "scale_out"}:  # the scenarios wrk loads
        require_wrk()
    # A SIGTERM unwinds like Ctrl-C, through the finally that stops every child process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.monotonic()
    results = {
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenarios": {},
    }
    try:
        plan = QUICK if args.quick else FULL
        if args.messages is not None:
            large = (max(10_000, args.messages // 100), args.messages)
            plan = dataclasses.replace(plan, scale_stages=[plan.scale_stages[0], large])
        results["options"] = {
            "api_workers": args.api_workers,
            "workers": args.workers,
            "messages": plan.scale_stages[-1][1],
            "soak_minutes": args.soak_minutes,
        }
        asyncio.run(run(plan, only, args, results))
    finally:
        results["seconds"] = round(time.monotonic() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
        if "machine" in results:
            table = report.markdown(results)
            args.out.with_suffix(".md").write_text(table + "\n")
            print(table)
        progress(f"{results['seconds']:.0f} s in all; JSON in {args.out}")


if __name__ == "__main__":
    main()
