-- Put dead letters back in the queue, due now, with a fresh attempt count (`attempt` keeps
-- counting: it fences off the workers of attempts before). ARGV: now, then delivery ids.
local now = fmt(now_from(ARGV[1]))
local count = 0
for i = 2, #ARGV do
    local id = ARGV[i]
    local d = base .. 'd:' .. id
    if redis.call('HGET', d, 'state') == 'dead' then
        local attempt = redis.call('HGET', d, 'attempt')
        redis.call('HSET', d, 'state', 'pending', 'due_at', now, 'attempt_base', attempt,
            'failures', 0)
        redis.call('HDEL', d, 'lease_owner', 'finished_at')
        redis.call('ZREM', base .. 'dead', id)
        redis.call('ZADD', base .. 'due:pending', now, id)
        count = count + 1
    end
end
if count > 0 then
    wake()
end
return count
