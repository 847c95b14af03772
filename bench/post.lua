-- wrk script: POST one signed GitHub delivery per request, each with its
-- own X-GitHub-Delivery so that the server records every one (no request
-- is answered as a duplicate).
--
-- The body never changes, so one signature serves every request; wrk's Lua
-- has no HMAC, so the caller computes it. Environment:
--   BENCH_BODY       path of the payload file (required)
--   BENCH_SIGNATURE  "sha256=<hex>" of that file under the server's secret (required)
--   BENCH_EVENT      X-GitHub-Event (default workflow_run)
--   BENCH_RUN        a prefix that makes this run's delivery IDs unique (default: random)
--
--   BENCH_BODY=... BENCH_SIGNATURE=... wrk -t2 -c32 -d10s --latency \
--     -s bench/post.lua http://127.0.0.1:8080/webhooks/github
--
-- done() prints one line starting "BENCH " that bench/run.sh parses.

local function required(name)
  local v = os.getenv(name)
  if v == nil or v == "" then
    error(name .. " is not set (see the top of bench/post.lua)")
  end
  return v
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local head, tail
local prefix
local counter = 0

function init(args)
  local f = assert(io.open(required("BENCH_BODY"), "rb"))
  local body = f:read("*a")
  f:close()
  local signature = required("BENCH_SIGNATURE")
  local event = os.getenv("BENCH_EVENT") or "workflow_run"
  local run = os.getenv("BENCH_RUN")
  math.randomseed(os.time() + tid * 7919)
  if run == nil or run == "" then
    run = string.format("%08x", math.random(0, 0x7fffffff))
  end
  prefix = string.format("bench-%s-%d-%06x-", run, tid, math.random(0, 0xffffff))
  -- Built once: only the delivery ID changes between requests, and it is
  -- the last header, so a request is head .. id .. tail.
  head = table.concat({
    "POST " .. wrk.path .. " HTTP/1.1",
    "Host: " .. wrk.host .. (wrk.port and (":" .. wrk.port) or ""),
    "Content-Type: application/json",
    "User-Agent: GitHub-Hookshot/bench",
    "X-GitHub-Event: " .. event,
    "X-Hub-Signature-256: " .. signature,
    "Content-Length: " .. #body,
    "X-GitHub-Delivery: ",
  }, "\r\n")
  tail = "\r\n\r\n" .. body
end

function request()
  counter = counter + 1
  return head .. prefix .. counter .. tail
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
