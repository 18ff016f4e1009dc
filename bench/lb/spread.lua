-- wrk's whole latency spread, not only its four percentiles (issue 17, attempt 26):
--   wrk -t2 -c256 -d4s -H "Connection: close" -s bench/lb/spread.lua http://ADDR/
-- prints one line: percentiles from the 5th to the 99.9th, mean and standard deviation (ms).
done = function(summary, latency, requests)
  local out = {}
  for _, p in ipairs({5, 10, 25, 50, 75, 90, 95, 99, 99.9}) do
    out[#out + 1] = string.format("p%s=%.1f", p, latency:percentile(p) / 1000)
  end
  io.write("spread ms: ", table.concat(out, " "),
    string.format(" mean=%.1f sd=%.1f\n", latency.mean / 1000, latency.stdev / 1000))
end
