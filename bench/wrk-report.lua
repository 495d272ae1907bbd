-- wrk's --latency stops at p99; this prints the fuller tail (p99.9, p99.99, max) and the error
-- counts in a form bench/run.sh parses: one RESULT line, then "PCT <percentile> <microseconds>".
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  for _, p in ipairs({50, 75, 90, 99, 99.9, 99.99}) do
    io.write(string.format("PCT %g %d\n", p, latency:percentile(p)))
  end
  io.write(string.format("PCT 100 %d\n", latency.max))
end
