-- wrk script for bench/envoy.sh: POST /v1/text/chatcompletion_v2 through Envoy for
-- WEIR_BENCH_ACCOUNTS distinct accounts (default 300), round robin, model MiniMax-M2
-- in the x-weir-model header (Envoy's rate limit actions read headers, not bodies).
-- The same requests go to both Envoy setups.
local accounts = tonumber(os.getenv("WEIR_BENCH_ACCOUNTS") or "300")
local body = '{"model":"MiniMax-M2","messages":[{"role":"user","content":"hi"}]}'
local counter = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-weir-model"] = "MiniMax-M2"

request = function()
  counter = counter + 1
  wrk.headers["x-weir-account"] = "bench-" .. ((counter % accounts) + 1)
  return wrk.format(nil, "/v1/text/chatcompletion_v2", nil, body)
end
