-- POST precomputed, signed Meta webhook bodies to /webhooks/instagram, each once in turn
-- (then round again: repeats are deduplicated by dmrelay, so keep the file large enough).
-- wrk -s webhook.lua URL -- <file of "<X-Hub-Signature-256> <body>" lines>
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local requests, next_one = {}, 0

function init(args)
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
