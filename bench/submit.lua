-- wrk script: POSTs the multipart body in $BENCH_BODY (boundary $BENCH_BOUNDARY)
-- with $BENCH_KEY as x-api-key: a submit with a ~1 MB JPEG control image.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. os.getenv("BENCH_BOUNDARY")
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY")
