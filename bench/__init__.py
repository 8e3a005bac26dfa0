"""dmrelay's benchmark harness: `python -m bench` (from the repo root, venv active).

It boots dmrelay as it runs in production (`python -m app.cli api` with one uvicorn
worker, `python -m app.cli worker`, `python -m app.cli sandbox` at 0 ms latency) on the
machine's PostgreSQL (database `dmrelay_bench`, dropped and re-created) and Redis (db 14,
flushed), loads it from separate processes (wrk for POST loads, an asyncio client for the
fixed-rate latency run), and prints a markdown table that puts every figure next to its
reference and its target. The JSON lands in bench/results/ (git-ignored).

The machine is small, shared and noisy: absolute figures drift from run to run, ratios
measured in the same run (dmrelay against the floor in bench/floor.py, 1 M rows against
10 k) are what to compare.

    python -m bench                 # full run, about 13 minutes
    python -m bench --quick         # smoke run, about 5 minutes
    python -m bench --profile-accept  # also samples the API with py-spy under accept load

wrk is required (`apt-get install -y wrk`); py-spy only for --profile-accept
(`pip install py-spy`).
"""
