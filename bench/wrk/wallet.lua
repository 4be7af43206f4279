-- wrk script: GET /v1/me/wallet as residents, a token drawn at random on every request.
--
--   BENCH_TOKENS=<file, one resident token a line> wrk -t2 -c16 -d10s -s wallet.lua URL
--
-- Many residents, each with a token of their own, as the API sees them in service.

function init(args)
  tokens = {}
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    tokens[#tokens + 1] = "Bearer " .. line
  end
  headers = {}
  math.randomseed(os.time() + #tokens)
end

function request()
  headers["Authorization"] = tokens[math.random(#tokens)]
  return wrk.format("GET", "/v1/me/wallet", headers)
end
