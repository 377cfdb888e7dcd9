-- Move events from the inbox into the log (see `ingest`), before a read of the log that must
-- see every event published (`evq events`, `show`).
-- ARGV: how many at most. Returns {how many entries were taken, how many are left}.
local taken = ingest(tonumber(ARGV[1]))
return { taken, redis.call('XLEN', base .. 'inbox') }
