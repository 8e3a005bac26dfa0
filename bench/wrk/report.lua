-- Shared by the load scripts: prints wrk's summary as one JSON line for bench/loadgen.py,
-- with the latency percentiles of wrk's histogram (what `wrk --latency` prints) so that the
-- tail can be seen.
local PERCENTILES = {50, 75, 90, 95, 99, 99.9, 99.99}

function done(summary, latency, requests)
  local e = summary.errors
  local points = {}
  for _, p in ipairs(PERCENTILES) do
    points[#points + 1] = string.format('"%g":%d', p, latency:percentile(p))
  end
  io.write(string.format(
    '\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f},' ..
    '"percentiles_us":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean, table.concat(points, ",")))
end
