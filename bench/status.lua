-- wrk script: GETs round-robin over the paths listed in $BENCH_PATHS (one per line),
-- sending $BENCH_KEY as x-api-key. The same list shape is used direct and through
-- the Worker, so both see the same request mix.
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do
  paths[#paths + 1] = line
end
local i = 0
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY")

request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
