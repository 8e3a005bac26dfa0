-- POST precomputed, signed Meta webhook bodies to /webhooks/instagram, each once in turn
-- (then round again: repeats are deduplicated by dmrelay, so keep the file large enough),
-- each connection pausing <pause ms> on average between its requests (0: as fast as
-- answered). Pauses are drawn at random (exponentially), as independent senders would space
-- them: equal pauses keep connections in step, and every round would come as one burst.
-- wrk -s webhook.lua URL -- <file of "<X-Hub-Signature-256> <body>" lines> [pause ms]
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local requests, next_one, pause = {}, 0, 0

function init(args)
  pause = tonumber(args[2] or "0")
  for line in io.lines(args[1]) do
    local signature, body = line:match("^(%S+) (.*)$")
    requests[#requests + 1] = wrk.format("POST", "/webhooks/instagram", {
      ["Content-Type"] = "application/json",
      ["X-Hub-Signature-256"] = signature,
    }, body)
  end
end

function request()
  next_one = next_one % #requests + 1
  return requests[next_one]
end

function delay()
  if pause == 0 then
    return 0
  end
  return -pause * math.log(1 - math.random())
end
