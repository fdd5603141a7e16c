-- POST /v1/chat/completions (non-streaming) with the benchmark account's key.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer weir-bench-key"
wrk.body = '{"model":"MiniMax-M2","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}'
