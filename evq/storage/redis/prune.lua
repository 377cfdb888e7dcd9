-- Delete events the worker found finished, with their deliveries, history and key.
-- ARGV: per event: event_id, how many deliveries it had, the last one's id ('' if none).
-- Fenced: an event whose deliveries changed since (a replay added one) is kept. Deliveries
-- are only ever appended with a new, higher id, and only dead ones are removed, so the same
-- count and last id mean the same deliveries, all of them still done.
local count = 0
for i = 1, #ARGV, 3 do
    local event_id, seen, last = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    local event = base .. 'e:' .. event_id
    local list = base .. 'ed:' .. event_id
    local f = redis.call('HMGET', event, 'name', 'key', 'dispatched_at')
    local now_last = redis.call('LINDEX', list, -1) or ''
    if f[3] and redis.call('LLEN', list) == seen and now_last == last then
        for _, id in ipairs(redis.call('LRANGE', list, 0, -1)) do
            redis.call('DEL', base .. 'd:' .. id, base .. 'h:' .. id)
        end
        if f[2] and redis.call('HGET', base .. 'keys', f[2]) == event_id then
            redis.call('HDEL', base .. 'keys', f[2])
        end
        redis.call('ZREM', base .. 'log', event_id)
        redis.call('ZREM', base .. 'n:' .. f[1], event_id)
        if redis.call('EXISTS', base .. 'n:' .. f[1]) == 0 then
            redis.call('SREM', base .. 'names', f[1])
        end
        redis.call('DEL', event, list)
        count = count + 1
    end
end
return count
