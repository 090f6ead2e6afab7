-- wrk script: POST a small chat-completions request; prints one machine-readable line at the end.
-- env: BENCH_AUTH (bearer token), BENCH_MODEL, BENCH_STREAM=1 for SSE with include_usage.
local model = os.getenv("BENCH_MODEL") or "gpt-6.2-sol"
local stream = os.getenv("BENCH_STREAM") == "1"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_AUTH") or "sk-bench")
if stream then
  wrk.body = '{"model":"' .. model .. '","stream":true,"stream_options":{"include_usage":true},'
    .. '"max_tokens":64,"messages":[{"role":"system","content":"You are a benchmark."},'
    .. '{"role":"user","content":"Say hello to the benchmark in a few words please"}]}'
else
  wrk.body = '{"model":"' .. model .. '","max_tokens":64,'
    .. '"messages":[{"role":"system","content":"You are a benchmark."},'
    .. '{"role":"user","content":"Say hello to the benchmark in a few words please"}]}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"rps":%.2f,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
    .. '"mean_us":%.1f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    e.status, e.connect + e.read + e.write + e.timeout))
end
