-- wrk script: POST a small chat-completions request; prints one machine-readable line at the end.
-- env: BENCH_AUTH (the key), BENCH_MODEL, BENCH_STREAM=1 for SSE with include_usage, BENCH_FORMAT.
local model = os.getenv("BENCH_MODEL") or "gpt-6.2-sol"
local stream = os.getenv("BENCH_STREAM") == "1"
-- BENCH_FORMAT: openai (default, any gateway request), or anthropic / gemini for the same request
-- in the vendor's own format, sent straight to the simulator (the "direct" path of a translated run).
local format = os.getenv("BENCH_FORMAT") or "openai"
local system = "You are a benchmark."
local user = "Say hello to the benchmark in a few words please"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH") or "sk-bench"
if format == "anthropic" then
  wrk.headers["x-api-key"] = auth
  wrk.headers["anthropic-version"] = "2023-06-01"
  wrk.body = '{"model":"' .. model .. '","max_tokens":64,' .. (stream and '"stream":true,' or '')
    .. '"system":"' .. system .. '","messages":[{"role":"user","content":"' .. user .. '"}]}'
elseif format == "gemini" then
  wrk.headers["x-goog-api-key"] = auth
  wrk.body = '{"systemInstruction":{"parts":[{"text":"' .. system .. '"}]},'
    .. '"contents":[{"role":"user","parts":[{"text":"' .. user .. '"}]}],'
    .. '"generationConfig":{"maxOutputTokens":64}}'
else
  wrk.headers["Authorization"] = "Bearer " .. auth
  wrk.body = '{"model":"' .. model .. '",'
    .. (stream and '"stream":true,"stream_options":{"include_usage":true},' or '')
    .. '"max_tokens":64,"messages":[{"role":"system","content":"' .. system .. '"},'
    .. '{"role":"user","content":"' .. user .. '"}]}'
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
