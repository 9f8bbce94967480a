-- wrk script for benchmarks/bench_server.py (one scenario per wrk run).
--
-- Environment:
--   BENCH_MODE   "form"   : POST each line of BENCH_LINES as an x-www-form-urlencoded body
--                "bearer" : BENCH_METHOD (default GET) with "Authorization: Bearer <line>"
--   BENCH_LINES  file with one request body or one access token per line
--
-- Requests cycle through the lines (each wrk thread starts at a different one).
-- At the end prints one line: BENCH_JSON {...} with counts and latency percentiles (µs).

local requests = {}
local index = 0
local thread_count = 0

function setup(thread)
  thread:set("offset", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  local mode = os.getenv("BENCH_MODE")
  local method = os.getenv("BENCH_METHOD") or "GET"
  for line in io.lines(os.getenv("BENCH_LINES")) do
    if line ~= "" then
      if mode == "form" then
        requests[#requests + 1] = wrk.format(
          "POST", nil, { ["Content-Type"] = "application/x-www-form-urlencoded" }, line)
      elseif mode == "bearer" then
        requests[#requests + 1] = wrk.format(method, nil, { ["Authorization"] = "Bearer " .. line }, nil)
      else
        error("BENCH_MODE must be form or bearer")
      end
    end
  end
  if #requests == 0 then error("no lines in BENCH_LINES") end
  index = (tonumber(offset) or 0) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
