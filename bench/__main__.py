"""`python -m bench`: boot dmrelay, run every scenario, print the table, write the JSON."""

import argparse
import asyncio
import atexit
import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import fixtures, report
from bench.loadgen import require_wrk
from bench.scenarios import accept, customer_webhooks, delivery, latency, media, scale, webhook
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
)
LATENCY_RATE = 100
MAIN_CHATS = 100


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def run(
    plan: Plan, only: set[str], profile_accept: bool, app_dir: Path, results: dict
) -> None:
    stack = Stack(log_dir=ROOT / "bench" / "results" / "logs", app_dir=app_dir)
    fx: fixtures.Fixtures | None = None  # made below, if a scenario needs it
    atexit.register(stack.stop_all)  # also on an exit that skips the finally below
    try:
        progress("fresh database and queue, sandbox and API starting")
        await stack.open()
        results["machine"] = await report.machine(stack)
        # Profiles made with the CLI take minutes on a busy machine: made only if a scenario
        # uses them (customer_webhooks makes its own).
        if only - {"customer_webhooks"} or profile_accept:
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
        ]  # fmt: skip
        for scenario, key, step in steps:
            if scenario not in only:
                continue
            progress(f"{key} …")
            started = time.monotonic()
            results["scenarios"][key] = await step()
            progress(f"{key} done in {time.monotonic() - started:.0f} s")
        if profile_accept:
            progress("py-spy on the API under accept load …")
            await stack.reset_messages()
            results["profile"] = await accept.profile(stack, fx, 10)
    finally:
        await stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (~2 minutes)")
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
    args = parser.parse_args()
    if set(args.only) & {"accept", "webhook"}:  # the scenarios wrk loads
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
        asyncio.run(run(plan, set(args.only), args.profile_accept, args.app_dir, results))
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
