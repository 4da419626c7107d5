-- wrk script for scripts/bench-telemetry.sh: each request a batch of 50
-- events of one of 100,000 players, every eventId unique, eventTimes now.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local function iso_now()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

request = function()
  counter = counter + 1
  local player = (counter * 7919 + thread_id * 104729) % 100000
  local run = "r" .. thread_id .. "-" .. counter
  local t = iso_now()
  local events = {}
  for i = 1, 50 do
    local id = thread_id .. "-" .. counter .. "-" .. i
    local kind = i % 5
    local e
    if kind == 0 then
      e = '{"eventType":"run_end","eventTime":"' .. t .. '","eventId":"' .. id ..
          '","payload":{"run_id":"' .. run .. '","outcome":"' .. ((i % 3 == 0) and "win" or "loss") .. '","tier":' .. (i % 7) .. '}}'
    elseif kind == 1 then
      e = '{"eventType":"draft_offered","eventTime":"' .. t .. '","eventId":"' .. id ..
          '","payload":{"run_id":"' .. run .. '","tier":' .. (i % 7) .. ',"options":["axe","bow","cape"]}}'
    elseif kind == 2 then
      e = '{"eventType":"draft_pick","eventTime":"' .. t .. '","eventId":"' .. id ..
          '","payload":{"run_id":"' .. run .. '","tier":' .. (i % 7) .. ',"picked_id":"axe"}}'
    elseif kind == 3 then
      e = '{"eventType":"wave_clear","eventTime":"' .. t .. '","eventId":"' .. id ..
          '","payload":{"run_id":"' .. run .. '","tier":' .. (i % 7) .. ',"wave_idx":' .. i .. '}}'
    else
      e = '{"eventType":"session_end","eventTime":"' .. t .. '","eventId":"' .. id ..
          '","payload":{"duration_s":' .. (60 + i) .. '}}'
    end
    events[i] = e
  end
  local body = '{"playerId":"p' .. player .. '","sessionId":"s' .. counter ..
      '","platform":"pc","clientVersion":"1.4.2","events":[' .. table.concat(events, ",") .. ']}'
  return wrk.format("POST", "/api/v1/telemetry/batch", nil, body)
end

local non_ok = 0
response = function(status, headers, body)
  if status ~= 200 then
    non_ok = non_ok + 1
    if non_ok <= 3 then
      io.stderr:write("HTTP " .. status .. ": " .. body .. "\n")
    end
  end
end
