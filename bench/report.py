"""The machine a run measured on, and the markdown table of its figures against the targets."""

import os
import platform
import subprocess
from pathlib import Path

from bench.stack import ROOT, Stack

# Issue #5: on the machine its targets were set on, the floor served about 2,200 req/s.
TARGETS_FLOOR = 2_200
# Measure 10: a step in N and M "grows" when its rate is at least this many times the step
# before's (more than the rounds' noise).
GROWS = 1.1


async def machine(stack: Stack) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    redis_info = await stack.queue.info("server")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "postgresql": await stack.db.fetchval("SHOW server_version"),
        "redis": redis_info["redis_version"],
        "python": platform.python_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "app_dir": str(stack.app_dir),
    }


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("✓" if ok else "✗")


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict) -> str:
    m, mode = results["machine"], results["mode"]
    lines = [
        f"## dmrelay benchmarks ({mode} run, {results['started_at']})",
        "",
        f"Machine: {m['nproc']} × {m['cpu_model']}, {m['memory_gib']} GiB · PostgreSQL "
        f"{m['postgresql']} · Redis {m['redis']} · Python {m['python']} · commit "
        f"{m['git_commit'][:12]}{' (uncommitted changes)' if m['git_dirty'] else ''}"
        + ("" if m["app_dir"] == str(ROOT) else f" · dmrelay run from {m['app_dir']}"),
        "",
        "| # | Measure | dmrelay | Reference | Target | Met |",
        "|---|---|---|---|---|---|",
    ]
    rows, notes = [], []
    s = results["scenarios"]

    if "accept" in s:
        a = s["accept"]
        d, f, q = a["dmrelay"], a["floor"], a["dmrelay_quiet"]
        rows.append((
            "1", "Accept rate, `POST /api/chats/{id}/messages` (req/s)",
            f"{_n(d['rate'])}", f"floor {_n(f['rate'])} → **{a['ratio']:.2f}×**",
            "≥ 0.95 × floor", _mark(a["ratio"] >= 0.95),
        ))  # fmt: skip
        rows.append((
            "1", "… its p99 at the same load (ms)",
            f"{_n(d['latency_ms']['p99'], 1)}",
            f"floor {_n(f['latency_ms']['p99'], 1)} → **{a['p99_ratio']:.2f}×**",
            "≤ 1.5 × floor", _mark(a["p99_ratio"] <= 1.5),
        ))  # fmt: skip
        rows.append((
            "1", "… request log at the default level (INFO) against off: its cost",
            f"{a['logging_cost']:.1%} of req/s ({_n(d['rate'])} against {_n(q['rate'])}); "
            f"{a['logging_cpu_share']:.1%} of CPU",
            f"CPU/request {_n(d['cpu_ms_per_request'], 3)} against "
            f"{_n(q['cpu_ms_per_request'], 3)} ms",
            "≤ 5 %", _mark(a["logging_cost"] <= 0.05),
        ))  # fmt: skip
        notes.append(
            f"1: worker stopped (accept path only); wrk 1 thread, {a['connections']} "
            f"connections (a closed loop: the same load for each), {a['seconds']:g} s per run "
            f"after a 2 s warm-up, {a['rounds']} round(s) taking turns (floor, dmrelay, dmrelay "
            "with LOG_LEVEL=WARNING: no access line), median round shown (req/s: floor "
            f"{', '.join(_n(r) for r in f['rates'])}; dmrelay "
            f"{', '.join(_n(r) for r in d['rates'])}; log off "
            f"{', '.join(_n(r) for r in q['rates'])}); ratios are the median of the rounds' "
            "ratios; 100 chats of one profile picked at random; non-2xx or socket errors: "
            f"dmrelay {d['errors']}, log off {q['errors']}, floor {f['errors']}. The floor "
            "(bench/floor.py) is a bare ASGI app: one asyncpg INSERT of the same row + one "
            "arq enqueue_job, same uvicorn settings."
        )
        notes.append(
            f"Machine speed: the floor served {_n(f['rate'])} req/s here, "
            f"{f['rate'] / TARGETS_FLOOR:.2f}× the ~{TARGETS_FLOOR:,} req/s of the "
            "machine the targets were set on. Measures 1, 4, 6 and 9 are ratios within this "
            "run; the targets of 2, 3 and 5 are absolute, so read them with this in mind."
        )
    if "latency" in s:
        lat = s["latency"]
        p = lat["post_to_meta_ms"] or {}
        rows.append((
            "2", f"POST → Meta latency at {lat['offered_rate']:g} msg/s, p50 / p95 / p99 (ms)",
            " / ".join(_n(p.get(k), 1) for k in ("p50", "p95", "p99")),
            f"accept alone p50 {_n((lat['accept_ms'] or {}).get('p50'), 1)} / p99 "
            f"{_n((lat['accept_ms'] or {}).get('p99'), 1)} ms",
            "p50 ≤ 5, p99 ≤ 15",
            _mark(bool(p) and p["p50"] <= 5 and p["p99"] <= 15
                  and lat["delivered"] == lat["sent"]),
        ))  # fmt: skip
        notes.append(
            f"2: open-loop client, {lat['sent']} messages over {lat['seconds']:g} s, "
            f"{lat['failed_posts']} POSTs failed, {lat['delivered']} messages reached the "
            "sandbox (0 ms latency, no echo webhooks) within 30 s of the last POST, spread "
            f"over {lat['chats']} chats of {lat['profiles']} profiles; "
            "latency = sandbox received_at − client clock before the POST."
        )
    for key in ("delivery_1", "delivery_many"):
        if key in s:
            d = s[key]
            # One account may not be sent more than Meta's cap, whatever the worker can do.
            capped = d["profiles"] == 1
            rows.append((
                "3", f"Sends/s, {_workers(d.get('workers', 1))}, {d['profiles']} profile(s)",
                f"{_n(d['rate'])}", f"{d['published']}/{d['messages']} published in "
                f"{_n(d['seconds'], 1)} s",
                "n/a: Meta caps one account at 100/s (see 4)" if capped else "≥ 3,000",
                "–" if capped else _mark((d["rate"] or 0) >= 3000),
            ))  # fmt: skip
    if "delivery_1" in s:
        notes.append(
            "3: messages accepted through the API with the worker stopped, then one "
            "`dmrelay worker` started; rate = published from the first external_posted_at "
            "(worker start-up excluded) to the last, or to the cut for a run cut short at "
            f"{s['delivery_1']['timeout']:g} s; sandbox at 0 ms, so this is dmrelay's own cost."
        )
    if "rate_limit" in s:
        r = s["rate_limit"]
        enforced = r["cap_enforced_by_sandbox"]
        rows.append((
            "4", f"Share of the per-profile cap used ({r['cap']}/s, 1 profile)",
            f"{r['share_of_cap']:.1%} ({_n(r['rate'], 1)}/s), "
            f"{r['throttle_errors']} throttle errors",
            f"cap {r['cap']}/s" + ("" if enforced else " (not enforced by the sandbox)"),
            "≥ 95 %, 0 throttle errors",
            _mark(r["share_of_cap"] >= 0.95 and r["throttle_errors"] == 0) if enforced else "–",
        ))  # fmt: skip
        notes.append(
            f"4: {r['messages']} messages for one profile (twice the cap's worth). "
            + (
                "The sandbox throttles each account above the cap (rate_limit.per_second), and "
                "its usage headers report 100 % when a second's calls reach it, which pauses "
                "the profile; throttle errors = sends refused with code 4/17/32/613 (retries "
                f"counted); {r['published']} published before the cut."
                if enforced
                else "The sandbox has no per-account rate limit yet "
                "(bench/scenarios/delivery.py enable_sandbox_rate_limit switches it on once "
                "it has), so this shows how far above Meta's cap one profile would be pushed: "
                "dmrelay does no per-profile pacing."
            )
        )
    if "webhook" in s:
        w = s["webhook"]
        rows.append((
            "5", "Webhook ack, `POST /webhooks/instagram` p50 / p99 (ms)",
            f"{_n(w['ack_ms']['p50'], 1)} / {_n(w['ack_ms']['p99'], 1)}",
            f"at {_n(w['post_rate'])} POST/s ({_n(w['post_rate'] * w['entries'])} events/s), "
            f"errors {sum(w['errors'].values())}",
            "p99 ≤ 20", _mark(w["ack_ms"]["p99"] <= 20),
        ))  # fmt: skip
        rows.append((
            "5", "Webhook events ingested/s (rows in `messages`)",
            _n(w["events_per_second"]) + ("" if w["settled"] else " (still growing: ≥)"),
            f"{w['events_stored']:,} events stored; completed POSTs carried "
            f"{w['events_offered']:,}",
            "≥ 3,000", _mark(w["events_per_second"] >= 3000),
        ))  # fmt: skip
        notes.append(
            f"5: wrk 1 thread, {w['connections']} connections each pausing {w['pause_ms']} ms on "
            f"average (drawn at random) between requests, {w['seconds']:g} s; "
            f"{w['entries']} entries × 1 messaging event per POST, unique mids, signed with "
            f"META_APP_SECRET; {w['unique_posts']:,} unique bodies sent; "
            f"{_workers(w.get('workers', 1))} running; "
            f"events/s = stored rows / (load time + {w['stored_after_load_seconds']:.1f} s "
            + (
                "until the last event was stored or the count stopped growing)."
                if w["settled"]
                else "after the load, when the wait was cut off with the count still growing)."
            )
        )
    if "scale" in s:
        sc = s["scale"]
        small, large = sc["stages"][0], sc["stages"][-1]
        labels = {
            "chats_list": "`GET /api/profiles/{id}/chats?per_page=20`",
            "hot_chat_messages": "`GET /api/chats/{hot}/messages?per_page=20`",
            "typical_chat_messages": "`GET /api/chats/{typical}/messages?per_page=20`",
        }
        for name, label in labels.items():
            lo, hi = small["latency_ms"][name], large["latency_ms"][name]
            ratio = sc["ratio_p50"][name]
            rows.append((
                "6", f"{label} p50 / p95 (ms) at {large['messages']:,} messages",
                f"{_n(hi['p50'], 1)} / {_n(hi['p95'], 1)}",
                f"at {small['messages']:,}: {_n(lo['p50'], 1)} / {_n(lo['p95'], 1)} → "
                f"**{ratio:.2f}×**",
                "≤ 1.2 ×", _mark(ratio <= 1.2),
            ))  # fmt: skip
        notes.append(
            f"6: {small['chats']:,} chats / {small['messages']:,} messages, then "
            f"{large['chats']:,} / {large['messages']:,}, in one profile; a hot chat holds 10 % "
            f"({small['hot_chat_messages']:,} then {large['hot_chat_messages']:,}), the rest "
            f"spread evenly (the typical chat: {small['typical_chat_messages']:,} then "
            f"{large['typical_chat_messages']:,}); {sc['requests']} sequential requests per "
            "endpoint after 10 warm-ups; ratio on p50."
        )
    if "customer_webhooks" in s:
        cw = s["customer_webhooks"]
        t, f, lat, hang = cw["throughput"], cw["floor"], cw["latency"], cw["hanging"]
        p, ph = lat["latency_ms"] or {}, hang["latency_ms"] or {}
        rows.append((
            "7", f"Customer webhooks: event → endpoint at {lat['offered_rate']:g} events/s, "
            "p50 / p99 (ms)",
            f"{_n(p.get('p50'), 1)} / {_n(p.get('p99'), 1)}",
            f"{lat['delivered']}/{lat['events']} delivered, {lat['endpoints']} endpoints",
            "p50 ≤ 15, p99 ≤ 50",
            _mark(bool(p) and p["p50"] <= 15 and p["p99"] <= 50
                  and lat["delivered"] == lat["events"]),
        ))  # fmt: skip
        rows.append((
            "7", f"Customer webhook deliveries/s, one worker, {t['endpoints']} endpoints",
            f"{_n(t['rate'])} ({t['deliveries']}/{t['expected']})",
            f"floor {_n(f['rate'])} → **{cw['ratio']:.2f}×**" if cw["ratio"] else "n/a",
            "≥ 2,000", _mark(t["rate"] >= 2000),
        ))  # fmt: skip
        rows.append((
            "7", "… the others' p50 / p99 (ms) with one endpoint hanging 30 s",
            f"{_n(ph.get('p50'), 1)} / {_n(ph.get('p99'), 1)}",
            f"without it: {_n(p.get('p99'), 1)} ms p99; "
            f"{hang['delivered']}/{hang['events']} delivered",
            "p99 unchanged",
            _mark(bool(p) and bool(ph) and ph["p99"] <= max(1.25 * p["p99"], p["p99"] + 5)),
        ))  # fmt: skip
        notes.append(
            "7: events inserted straight into customer_events (autocommit), so the outbox alone "
            "is measured: trigger, NOTIFY, the worker's Dispatcher, signed POST to a bare "
            "receiver process (bench/webhook_receiver.py); latency = arrival − the clock before "
            f"the INSERT, over {lat['endpoints']} endpoints of as many profile groups; "
            f"throughput: {t['events']} events × {t['endpoints']} endpoints queued with the "
            "worker stopped, rate = arrivals / (last − first); the floor (bench/webhook_floor.py) "
            "reads, POSTs (aiohttp) and records each event per endpoint in order, nothing else. "
            "'Unchanged' = within 25 % (or 5 ms) of the p99 without the hanging endpoint."
        )
    if "media" in s:
        md = s["media"]
        rows.append((
            "8", f"Attachment uploads for one video sent to {md['chats']:,} chats (1 profile)",
            f"{md['campaign_upload_calls']}",
            f"{md['sent_by_attachment_id']:,} sent by attachment id, {md['published']:,}/"
            f"{md['messages']:,} published",
            "1 upload", _mark(md["campaign_upload_calls"] == 1 and md["undelivered"] == 0),
        ))  # fmt: skip
        if "cap" in md:
            rows.append((
                "8", f"… their pace against Meta's audio/video cap ({md['cap']:g}/s per account)",
                f"{_n(md['rate'], 1)}/s ({md['share_of_cap']:.0%}), "
                f"{md['throttle_errors']} throttle errors",
                "cap enforced by the sandbox" if md["cap_enforced_by_sandbox"]
                else "cap not enforced by the sandbox",
                "≤ cap, 0 throttle errors",
                _mark(md["throttle_errors"] == 0 and (md["rate"] or 0) <= md["cap"]),
            ))  # fmt: skip
        notes.append(
            f"8: the video's URL POSTed to each chat ({_n(md['url_accept_rate'])} req/s, its "
            "host never resolves, so the type comes from the extension), plus one "
            f"{md['video_bytes'] // 2**20} MB multipart file accepted in "
            f"{_n(md['multipart_accept_ms'], 1)} ms (stored; a file of its own to Meta: "
            f"{md['upload_calls']} uploads in all); one worker, video paced at Meta's "
            "audio/video rate (RATE_AUDIO_VIDEO); the sandbox refuses an account's sends above "
            "the cap with code 4, as Meta does (throttle errors, retries counted)."
        )
    if "hot_chat" in s:
        _hot_chat(s["hot_chat"], rows, notes)
    if "scale_out" in s:
        _scale_out(s["scale_out"], rows, notes, m["nproc"])
    if "soak" in s:
        _soak(s["soak"], rows, notes)
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines += _percentiles(s)
    lines += _cost(s)
    lines += _scale_out_table(s)
    lines += ["", "Notes:", *[f"- {note}" for note in notes]]
    if "profile" in results:
        pr = results["profile"]
        lines += [
            "",
            f"py-spy, API process under accept load ({pr['samples']} samples, "
            f"{_n(pr['rate_while_sampled'])} req/s while sampled), top frames by own time:",
            "",
            *[f"{i}. {f['share']:.1%} `{f['frame']}`" for i, f in enumerate(pr["top_own"], 1)],
            "",
            "dmrelay's own functions by inclusive time:",
            "",
            *[
                f"{i}. {f['share']:.1%} `{f['frame']}`"
                for i, f in enumerate(pr["top_app_inclusive"], 1)
            ],
        ]
    return "\n".join(lines)


def _workers(count: int) -> str:
    return "one worker" if count == 1 else f"{count} workers"


def _ms(value: float | None) -> str:
    """Milliseconds of CPU per item: three decimals, as they are a fraction of a millisecond."""
    return "–" if value is None else f"{value:.3f}"


def _percentiles(s: dict) -> list[str]:
    """Measure 1's latency histogram (wrk's percentiles), median round of each."""
    if "accept" not in s:
        return []
    a = s["accept"]
    points = ["50", "75", "90", "99", "99.9", "99.99", "max"]
    lines = [
        "",
        "Measure 1's latency percentiles at the same load (ms; each one's median round):",
        "",
        f"| | {' | '.join('max' if p == 'max' else f'p{p}' for p in points)} |",
        f"|---|{'---|' * len(points)}",
    ]
    for name, label in (
        ("floor", "floor"),
        ("dmrelay", "dmrelay"),
        ("dmrelay_quiet", "dmrelay, request log off"),
    ):
        values = a[name]["percentiles_ms"]
        lines.append(f"| {label} | {' | '.join(_n(values.get(p), 1) for p in points)} |")
    return lines


def _cost(s: dict) -> list[str]:
    """CPU per message on each path, API and worker(s) apart, and PostgreSQL's backends."""
    rows = []
    if "accept" in s:
        d, f, q = s["accept"]["dmrelay"], s["accept"]["floor"], s["accept"]["dmrelay_quiet"]
        rows.append(("Accept, per request (1)", _ms(d["cpu_ms_per_request"]), "–",
                     _ms(d["postgres_cpu_ms_per_request"]),
                     f"floor {_ms(f['cpu_ms_per_request'])}, its PostgreSQL "
                     f"{_ms(f['postgres_cpu_ms_per_request'])}"))  # fmt: skip
        rows.append(("… request log off (1)", _ms(q["cpu_ms_per_request"]), "–",
                     _ms(q["postgres_cpu_ms_per_request"]), ""))  # fmt: skip
    for key, label in (("delivery_many", "Send, per message published (3, 50 profiles)"),
                       ("delivery_1", "Send, per message published (3, 1 profile)")):  # fmt: skip
        if key in s and "cpu" in s[key]:
            per = s[key]["cpu"]["ms_per_item"]
            rows.append((label, "–", _ms(per["worker"]), _ms(per["postgres"]), ""))
    if "webhook" in s and "cpu" in s["webhook"]:
        w = s["webhook"]
        per = w["cpu"]["ms_per_item"]
        rows.append(("Inbound event: ack per event, apply per event stored (5)",
                     _ms(w["api_cpu_ms_per_event"]), _ms(per["worker"]),
                     _ms(per["postgres"]), ""))  # fmt: skip
    if "customer_webhooks" in s and "cpu" in s["customer_webhooks"]["throughput"]:
        cw = s["customer_webhooks"]
        per = cw["throughput"]["cpu"]["ms_per_item"]
        rows.append(("Customer-webhook delivery (7)", "–", _ms(per["worker"]),
                     _ms(per["postgres"]),
                     f"floor {_ms(cw['floor'].get('cpu_ms_per_delivery'))}"))  # fmt: skip
    if "media" in s and "cpu" in s["media"]:
        per = s["media"]["cpu"]["ms_per_item"]
        rows.append(("Video send by attachment id (8)", "–", _ms(per["worker"]),
                     _ms(per["postgres"]), ""))  # fmt: skip
    if not rows:
        return []
    return [
        "",
        "CPU per message (ms of CPU time, utime + stime from /proc, over the load; the API's "
        "and workers' process trees; PostgreSQL: the backends of the bench's database; runs "
        "paced by Meta's caps, one profile and video, include the worker's idle polling):",
        "",
        "| Path | API | Worker(s) | PostgreSQL | Reference |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in rows],
    ]


def _hot_chat(h: dict, rows: list, notes: list) -> None:
    one, many = h["dmrelay_one"], h["dmrelay_many"]
    f_one, f_many = h["floor_one"], h["floor_many"]
    rows.append((
        "9", f"Hot chat: accept to 1 chat against {h['chats_many']} chats (req/s)",
        f"{_n(one['rate'])} against {_n(many['rate'])} → **{h['ratio']:.2f}×**",
        f"floor {_n(f_one['rate'])} against {_n(f_many['rate'])} → {h['floor_ratio']:.2f}×",
        "≥ 0.95 ×", _mark(h["ratio"] >= 0.95),
    ))  # fmt: skip
    rows.append((
        "9", "… CPU per request, API / PostgreSQL (ms), 1 chat against many (target: the sum)",
        f"{_ms(one['cpu_ms_per_request'])} / {_ms(one['postgres_cpu_ms_per_request'])} against "
        f"{_ms(many['cpu_ms_per_request'])} / {_ms(many['postgres_cpu_ms_per_request'])}",
        f"floor {_ms(f_one['cpu_ms_per_request'])} / "
        f"{_ms(f_one['postgres_cpu_ms_per_request'])} against "
        f"{_ms(f_many['cpu_ms_per_request'])} / {_ms(f_many['postgres_cpu_ms_per_request'])}",
        "as many", _mark(h["cpu_ratio"] <= 1.05),
    ))  # fmt: skip
    rows.append((
        "9", "… backends waiting on a lock (mean; share of active), 1 chat against many",
        f"{one['mean_lock_waits']:.2f} ({one['lock_wait_share']:.0%}) against "
        f"{many['mean_lock_waits']:.2f} ({many['lock_wait_share']:.0%})",
        f"floor {f_one['mean_lock_waits']:.2f} ({f_one['lock_wait_share']:.0%}) against "
        f"{f_many['mean_lock_waits']:.2f} ({f_many['lock_wait_share']:.0%})",
        "–", "–",
    ))  # fmt: skip
    rows.append((
        "9", "… `chats` rows: updates per request, HOT share, dead tuples added (net), "
        "most seen",
        f"1 chat: {one['chat_updates_per_request']:.2f}, {_pct(one['hot_update_share'])}, "
        f"{one['dead_tuples_added']:+,}, {one['max_dead_tuples']:,}; many: "
        f"{many['chat_updates_per_request']:.2f}, {_pct(many['hot_update_share'])}, "
        f"{many['dead_tuples_added']:+,}, {many['max_dead_tuples']:,}",
        f"autovacuums during the runs: {one['autovacuums'] + many['autovacuums']}",
        "–", "–",
    ))  # fmt: skip
    notes.append(
        f"9: worker stopped; wrk 1 thread, {h['connections']} connections, {h['seconds']:g} s "
        f"per run (after one 2 s warm-up each), {h['rounds']} round(s) of dmrelay and the "
        "floor (whose INSERT fires the same counter trigger) each on one chat, then on "
        f"{h['chats_many']}; median round's req/s; CPU per request over all rounds "
        "(PostgreSQL: the bench database's backends); lock waits: pg_stat_activity sampled "
        "every 50 ms, backends with wait_event_type Lock (a row or transaction another holds), "
        "as a mean count and a share of the active ones; `chats` counts from "
        "pg_stat_user_tables before and after each run (read 11 s after the load: a busy "
        "backend reports what it holds back only after 10 s idle)."
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _grew(ratio: float | None) -> bool:
    """Grown by more than the rounds' noise over the step before."""
    return ratio is not None and ratio >= GROWS


def _scale_out(so: dict, rows: list, notes: list, nproc: int) -> None:
    cap = so.get("cpu_per_process")
    each = f"each ≤ {cap:g} core" if cap else "uncapped"
    configs = so["configs"]
    base = configs[0]
    for before, c in zip(configs, configs[1:], strict=False):
        grew = _grew(c["accept_vs_previous"]) and _grew(c["sends_vs_previous"])
        # Stopped where the machine's cores were all busy: its limit, not dmrelay's.
        full = max(c["machine_cores_accept"] or 0, c["machine_cores_send"] or 0) >= 0.9 * nproc
        rows.append((
            "10", f"Scale out, {c['api_processes']} API processes / {c['workers']} workers "
            f"({each}): accept req/s; sends/s (50 profiles)",
            f"{_n(c['accept_rate'])}; {_n(c['send_rate'])}",
            f"1/1: {_n(base['accept_rate'])}; {_n(base['send_rate'])} → "
            f"**{c['accept_vs_base']:.2f}×; {c['sends_vs_base'] or 0:.2f}×** "
            f"({before['api_processes']}/{before['workers']}: {c['accept_vs_previous']:.2f}×; "
            f"{c['sends_vs_previous'] or 0:.2f}×)",
            f"grows (≥ {GROWS:g}× the step before)",
            _mark(grew) + (" (machine's cores)" if not grew and full else ""),
        ))  # fmt: skip
    latency = so.get("at_latency") or []
    for before, c in zip(latency, latency[1:], strict=False):
        rows.append((
            "10", f"… at Meta's latency ({so['latency_ms']} ms a call): sends/s, "
            f"{_workers(c['workers'])} ({each}), {so['latency_chats']} chats",
            f"{_n(c['send_rate'])}",
            f"{_workers(latency[0]['workers'])}: {_n(latency[0]['send_rate'])} → "
            f"**{c['sends_vs_base'] or 0:.2f}×** ({_workers(before['workers'])}: "
            f"{c['sends_vs_previous'] or 0:.2f}×)",
            f"grows (≥ {GROWS:g}×)", _mark(_grew(c["sends_vs_previous"])),
        ))  # fmt: skip
    quota = (
        f"each API process (uvicorn's children) and worker under a CPU quota of {cap:g} core "
        "(cgroup v1 cpu.cfs_quota_us, bench/cgroups.py), PostgreSQL, Redis, the sandbox and "
        "wrk uncapped"
        if cap
        else f"no CPU quota ({so.get('quota_note') or 'not asked for'}): every process shares "
        "this machine's cores, so more processes can only take CPU from the others"
    )
    notes.append(
        f"10: {quota}. {so['rounds']} round(s) taking turns: the API restarted with uvicorn "
        f"--workers N, wrk as in 1 for {so['seconds']:g} s (worker stopped), then "
        f"{so['messages']:,} messages accepted and delivered by M workers as in 3 (sandbox at "
        "0 ms); median rounds' rates, mean CPU. "
        + (
            f"At Meta's latency: the sandbox answers after {so['latency_ms']} ms, "
            f"{so['latency_messages']:,} messages over {so['latency_chats']} chats (one chat "
            "sends one message at a time). "
            if latency
            else ""
        )
        + "The cores each process, PostgreSQL's backends and the whole machine (every "
        "process, the bench's or not) used are in the table below."
    )


def _kb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1000:.1f}"


def _scale_out_table(s: dict) -> list[str]:
    """Measure 10's configurations side by side: rates, CPU per message, cores used."""
    if "scale_out" not in s:
        return []
    so = s["scale_out"]
    lines = [
        "",
        "Measure 10 by configuration (CPU per message in ms; cores: CPU seconds / wall "
        "seconds over the load; API and worker cores are per process; machine: every busy "
        "core; WAL: the server's, other databases' writes included):",
        "",
        "| API / workers | Accept req/s | API ms/req (cores each) | PostgreSQL ms/req (cores; "
        "WAL kB/req) | Machine cores | Sends/s | Worker ms/send (cores each) | PostgreSQL "
        "ms/send (cores; WAL kB/send) | Machine cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in so["configs"]:
        lines.append(
            f"| {c['api_processes']} / {c['workers']} | {_n(c['accept_rate'])} | "
            f"{_ms(c['api_cpu_ms_per_request'])} ({_n(c['api_cores_each'], 2)}) | "
            f"{_ms(c['postgres_cpu_ms_per_request'])} ({_n(c['postgres_cores_accept'], 2)}; "
            f"{_kb(c.get('wal_bytes_per_request'))}) | "
            f"{_n(c['machine_cores_accept'], 2)} | {_n(c['send_rate'])} | "
            f"{_ms(c['worker_cpu_ms_per_send'])} ({_n(c['worker_cores_each'], 2)}) | "
            f"{_ms(c['postgres_cpu_ms_per_send'])} ({_n(c['postgres_cores_send'], 2)}; "
            f"{_kb(c.get('wal_bytes_per_send'))}) | {_n(c['machine_cores_send'], 2)} |"
        )
    for c in so.get("at_latency") or []:
        lines.append(
            f"| Meta at {so['latency_ms']} ms: – / {c['workers']} | – | – | – | – | "
            f"{_n(c['send_rate'])} | {_ms(c['worker_cpu_ms_per_send'])} "
            f"({_n(c['worker_cores_each'], 2)}) | {_ms(c['postgres_cpu_ms_per_send'])} "
            f"({_n(c['postgres_cores_send'], 2)}; {_kb(c.get('wal_bytes_per_send'))}) | "
            f"{_n(c['machine_cores_send'], 2)} |"
        )
    return lines


def _soak(sk: dict, rows: list, notes: list) -> None:
    rows.append((
        "–", f"Soak, {sk['minutes']:g} min of sends and webhooks: `chats` most dead tuples",
        f"{sk['max_dead_tuples']:,} (live rows {_n(sk['live_rows'])})",
        f"{sk['autovacuums']} autovacuums, {sk['chat_updates']:,} updates "
        f"({_pct(sk['hot_updates'] / sk['chat_updates'] if sk['chat_updates'] else None)} HOT)",
        "bounded", "–",
    ))  # fmt: skip
    per = sk["cpu"]["ms_per_item"]
    trend = ", ".join(f"{x['at_seconds']} s: {x.get('n_dead_tup') or 0:,}" for x in sk["samples"])
    notes.append(
        f"Soak: open loop, {sk['send_rate']:g} sends/s over two chats of each spread profile "
        f"and {sk['webhook_rate']:g} webhook POSTs/s of {sk['events_per_post']} events; "
        f"{sk['sent']:,} sends accepted ({sk['send_failures']} failed), {sk['posts']:,} POSTs "
        f"({sk['post_failures']} failed); {sk['published']:,} published, "
        f"{sk['inbound_stored']:,} inbound stored; CPU per message (sent or received): API "
        f"{_ms(per['api'])}, worker {_ms(per['worker'])}, PostgreSQL {_ms(per['postgres'])} ms. "
        f"`chats` dead tuples every 30 s: {trend}."
    )
