-- wrk script: POST one prepared inference request over and over (keep-alive),
-- then print a one-line JSON summary that benchmarks/run.py parses.
-- Env: BODY_FILE (request body), CONTENT_TYPE, INFER_HEADER_LEN (binary extension), URL_PATH
-- (/v2/models/{m}/infer for tensors, /v2/models/{m}/image for a JPEG or PNG file sent as it is).
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*all")
f:close()
wrk.method = "POST"
wrk.path = os.getenv("URL_PATH") or wrk.path
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local ihcl = os.getenv("INFER_HEADER_LEN")
if ihcl and ihcl ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = ihcl
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_timeout": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
