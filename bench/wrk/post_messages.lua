-- POST /api/chats/{id}/messages to a random chat of a list, with a unique body each time.
-- wrk -s post_messages.lua URL -- <file of chat paths, one per line> <API key>
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local paths, headers, sent = {}, {}, 0

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  headers["Authorization"] = "Bearer " .. args[2]
  headers["Content-Type"] = "application/json"
  math.randomseed(os.time())
end

function request()
  sent = sent + 1
  local body = string.format('{"body":"bench accept %d-%d"}', os.time(), sent)
  return wrk.format("POST", paths[math.random(#paths)], headers, body)
end
