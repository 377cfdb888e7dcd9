-- Store events; an event whose idempotency key is stored already is not stored again.
-- ARGV: sent_at, then per event: id, name, payload, published_at, due_at, key ('' for none),
-- headers (JSON text, '' for none).
-- Returns the id stored for each event (the first event's, for a key seen before).
-- Redis does not undo what a script wrote before it failed: check every argument first.
for i = 2, #ARGV, 7 do
    if not tonumber(ARGV[i + 3]) or not tonumber(ARGV[i + 4]) or ARGV[i + 6] == nil then
        return redis.error_reply('ERR evq publish: event ' .. (i + 5) / 7 .. ' is malformed')
    end
end
local skew = skew_from(ARGV[1])
local ids = {}
local stored = 0
for i = 2, #ARGV, 7 do
    local id, name, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local published_at, due_at, key = ARGV[i + 3], shifted(ARGV[i + 4], skew), ARGV[i + 5]
    local first = false
    if key ~= '' then
        first = redis.call('HGET', base .. 'keys', key)
    end
    if first then
        ids[#ids + 1] = first
    else
        -- Also the count of events ever stored, which `evq status` shows as published.
        local seq = redis.call('INCR', base .. 'event_seq')
        local event = base .. 'e:' .. id
        redis.call('HSET', event, 'name', name, 'payload', payload,
            'published_at', published_at, 'due_at', due_at)
        if key ~= '' then
            redis.call('HSET', base .. 'keys', key, id)
            redis.call('HSET', event, 'key', key)
        end
        if ARGV[i + 6] ~= '' then
            redis.call('HSET', event, 'headers', ARGV[i + 6])
        end
        redis.call('ZADD', base .. 'log', 0, id)
        redis.call('ZADD', base .. 'n:' .. name, 0, id)
        redis.call('SADD', base .. 'names', name)
        redis.call('ZADD', base .. 'undispatched', seq, id)
        if tonumber(due_at) > tonumber(published_at) then
            redis.call('ZADD', base .. 'delayed', due_at, id)
        end
        stored = stored + 1
        ids[#ids + 1] = id
    end
end
if stored > 0 then
    redis.call('HSETNX', base .. 'meta', 'version', '1')
    wake()
end
return ids
