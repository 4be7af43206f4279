-- wrk script: POST /v1/trades, a fresh Idempotency-Key and trade id on every request.
--
--   BENCH_TOKEN=<platform token> BENCH_RESIDENTS=<file, "resident household" a line> \
--   BENCH_RUN=<tag unique to this run> wrk -t2 -c16 -d10s -s trades.lua http://HOST:PORT
--
-- Each wrk thread has its own Lua state: `setup` numbers the threads, and the key is
-- run-thread-counter, so no two requests of a run (or of two runs) share a key. Buyer
-- and seller are two open wallets of different households drawn at random (the
-- same_household_trade guard refuses a trade within a household): a sharing-market
-- trade between residents, accrued to the buyer.

local threads = 0

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  residents = {}
  households = {}
  for line in io.lines(os.getenv("BENCH_RESIDENTS")) do
    local resident, household = line:match("^(%S+) (%S+)$")
    residents[#residents + 1] = resident
    households[#households + 1] = household
  end
  headers = {
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
    ["Content-Type"] = "application/json",
  }
  run = os.getenv("BENCH_RUN")
  counter = 0
  math.randomseed(thread_number + 1)
end

function request()
  counter = counter + 1
  local key = string.format("%s-%d-%d", run, thread_number, counter)
  local buyer = math.random(#residents)
  local seller = buyer
  while households[seller] == households[buyer] do
    seller = math.random(#residents)
  end
  headers["Idempotency-Key"] = key
  local body = string.format(
    '{"trade_id":"B-%s","market":"sharing","category":"carpool","seller_id":"%s",' ..
    '"seller_kind":"resident","buyer_id":"%s","amount_won":%d,"points_used_won":0}',
    key, residents[seller], residents[buyer], 1000 + counter % 50000)
  return wrk.format("POST", "/v1/trades", headers, body)
end
