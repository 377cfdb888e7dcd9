-- Extend running leases (fenced by attempt). ARGV: sent_at, then delivery_id, attempt,
-- expiry triples. Returns how many were still held.
local skew = skew_from(ARGV[1])
local held = 0
for i = 2, #ARGV, 3 do
    local id, attempt, expiry = ARGV[i], ARGV[i + 1], shifted(ARGV[i + 2], skew)
    local d = base .. 'd:' .. id
    local f = redis.call('HMGET', d, 'state', 'attempt')
    if f[1] == 'running' and f[2] == attempt then
        redis.call('HSET', d, 'due_at', expiry)
        redis.call('ZADD', base .. 'due:running', expiry, id)
        held = held + 1
    end
end
return held
