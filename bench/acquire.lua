-- wrk script: POST /v1/acquire for WEIR_BENCH_ACCOUNTS distinct accounts (default
-- 300), round robin, each call a MiniMax-M2 text call estimating 100 tokens with a
-- one-minute lease. The same requests go to nginx for the baseline.
local accounts = tonumber(os.getenv("WEIR_BENCH_ACCOUNTS") or "300")
local bodies = {}
for i = 1, accounts do
  bodies[i] = string.format(
    '{"account":"bench-%d","api":"text","model":"MiniMax-M2","units":100,"lease_ttl_ms":60000}', i)
end
local counter = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/acquire", nil, bodies[(counter % accounts) + 1])
end
