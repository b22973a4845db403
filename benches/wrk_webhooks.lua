-- wrk script: POSTs the pre-signed webhooks of the file given after `--`, each once.
-- Every thread takes its own slice of the file so that no webhookEventId is sent twice.
local requests = {}
local next_index = 1
local wrapped = false

local threads_started = 0
function setup(thread)
  thread:set("thread_id", threads_started)
  threads_started = threads_started + 1
end

function init(args)
  local file, threads, id = args[1], tonumber(args[2] or "1"), thread_id
  local n = 0
  for line in io.lines(file) do
    if n % threads == id then
      local sig, body = line:match("^([^\t]+)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", "/line/webhook/demo",
        { ["x-line-signature"] = sig, ["content-type"] = "application/json" }, body)
    end
    n = n + 1
  end
end

function request()
  local r = requests[next_index]
  next_index = next_index + 1
  if next_index > #requests then
    next_index = 1
    if not wrapped then
      wrapped = true
      io.stderr:write("warning: ran out of unique webhooks; later requests are redeliveries\n")
    end
  end
  return r
end
