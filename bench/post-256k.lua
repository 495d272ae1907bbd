-- A 256 KiB POST body for every request: bench/ab.sh with AB_WRK_ARGS="-s bench/post-256k.lua".
wrk.method = "POST"
wrk.body = string.rep("x", 262144)
wrk.headers["Content-Type"] = "application/octet-stream"
