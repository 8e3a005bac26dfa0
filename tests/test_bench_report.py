"""The benchmark's report of measure 10 (bench/report.py): each step in N and M is checked for
growth against the step before, a step that stops where the machine's cores were all busy
says so, and a run without CPU quotas says why."""

from typing import Any

from bench import report
from bench.stack import ROOT

MACHINE = {
    "nproc": 2,
    "cpu_model": "test CPU",
    "memory_gib": 1.0,
    "postgresql": "15",
    "redis": "7",
    "python": "3.11",
    "git_commit": "0" * 40,
    "git_dirty": False,
    "app_dir": str(ROOT),
}


def _config(n: int, accept: float, sends: float, machine: float) -> dict[str, Any]:
    return {
        "api_processes": n,
        "workers": n,
        "accept_rate": accept,
        "send_rate": sends,
        "api_cpu_ms_per_request": 0.35,
        "api_cores_each": 0.3,
        "postgres_cpu_ms_per_request": 0.2,
        "postgres_cores_accept": 0.1 * n,
        "machine_cores_accept": machine,
        "wal_bytes_per_request": 1500.0,
        "worker_cpu_ms_per_send": 0.15,
        "worker_cores_each": 0.3,
        "postgres_cpu_ms_per_send": 0.13,
        "postgres_cores_send": 0.1 * n,
        "machine_cores_send": machine,
        "wal_bytes_per_send": 900.0,
    }


def _scale_out(cap: float | None, note: str | None) -> dict[str, Any]:
    configs = [
        _config(1, 800, 1_800, 1.0),
        _config(2, 1_600, 3_500, 1.6),
        _config(3, 1_700, 3_600, 1.95),
    ]
    for c in configs:
        for key, name in (("accept_rate", "accept"), ("send_rate", "sends")):
            c[f"{name}_vs_base"] = c[key] / configs[0][key]
    for before, c in zip([configs[0], *configs], configs, strict=False):
        c["accept_vs_previous"] = c["accept_rate"] / before["accept_rate"]
        c["sends_vs_previous"] = c["send_rate"] / before["send_rate"]
    at_latency = []
    for m, rate in ((1, 950.0), (2, 1_900.0)):
        row = _config(0, 0, rate, 1.0)
        row.update(workers=m, sends_vs_base=rate / 950, sends_vs_previous=rate / 950)
        at_latency.append(row)
    return {
        "rounds": 2,
        "seconds": 8,
        "messages": 6_000,
        "cpu_per_process": cap,
        "quota_note": note,
        "configs": configs,
        "latency_ms": 100,
        "latency_chats": 400,
        "latency_messages": 6_000,
        "at_latency": at_latency,
    }


def _rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| 10 |")]


def test_each_step_is_checked_for_growth_and_a_full_machine_named() -> None:
    text = report.markdown(
        {
            "machine": MACHINE,
            "mode": "full",
            "started_at": "now",
            "scenarios": {"scale_out": _scale_out(0.3, None)},
        }
    )
    two, three, latency = _rows(text)
    assert "2 API processes / 2 workers (each ≤ 0.3 core)" in two and two.endswith("| ✓ |")
    assert "**2.00×; 1.94×**" in two
    # 3/3 barely grew, with the machine's two cores busy: its limit, said so.
    assert three.endswith("| ✗ (machine's cores) |")
    assert "2 workers" in latency and latency.endswith("| ✓ |")
    assert "CPU quota of 0.3 core" in text
    assert "| Meta at 100 ms: – / 2 |" in text
    # 2/2's PostgreSQL: its cores and the WAL per request in kB.
    assert "(0.20; 1.5)" in text


def test_a_run_without_quotas_says_why() -> None:
    text = report.markdown(
        {
            "machine": MACHINE,
            "mode": "full",
            "started_at": "now",
            "scenarios": {"scale_out": _scale_out(None, "no cgroup v1 cpu controller at /x")},
        }
    )
    assert "(uncapped)" in _rows(text)[0]
    assert "no CPU quota (no cgroup v1 cpu controller at /x)" in text
