-- What `evq status` shows, from counters and sorted sets only, in one consistent read.
-- ARGV: now ('' for the server's clock), rate window (seconds), workers seen within (seconds).
-- Returns {now, published, awaiting_dispatch, delayed, pending due, pending later,
--   retrying due, retrying later, running, dead, next_due, done, failed, worker JSON...}.
local now = now_from(ARGV[1])
local window, seen_within = tonumber(ARGV[2]), tonumber(ARGV[3])
local n = fmt(now)
local function count(name, low, high)
    return redis.call('ZCOUNT', base .. name, low, high)
end
-- Events still in the inbox are published, not fanned out yet, and due (see `ingest`).
local inbox = redis.call('XLEN', base .. 'inbox')
local result = {
    n,
    tonumber(redis.call('GET', base .. 'event_seq') or '0') + inbox,
    redis.call('ZCARD', base .. 'undispatched') + inbox,
    count('delayed', '(' .. n, '+inf'),
    count('due:pending', '-inf', n),
    count('due:pending', '(' .. n, '+inf'),
    count('due:retrying', '-inf', n),
    count('due:retrying', '(' .. n, '+inf'),
    redis.call('ZCARD', base .. 'due:running'),
    redis.call('ZCARD', base .. 'dead'),
    next_due(),
}
local second = math.floor(now)
local done, failed = 0, 0
for s = second - window, second - 1 do
    local counts = redis.call('HMGET', base .. 'stats', 'done:' .. s, 'failed:' .. s)
    done = done + (tonumber(counts[1]) or 0)
    failed = failed + (tonumber(counts[2]) or 0)
end
result[#result + 1] = done
result[#result + 1] = failed
for _, id in ipairs(redis.call('ZRANGEBYSCORE', base .. 'workers_seen', fmt(now - seen_within), '+inf')) do
    local info = redis.call('HGET', base .. 'workers', id)
    if info then
        result[#result + 1] = info
    end
end
return result
