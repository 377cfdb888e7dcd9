-- Store events; an event whose idempotency key is stored already is not stored again.
-- ARGV: sent_at, then per event: id, name, payload, published_at, due_at, key ('' for none),
-- headers (JSON text, '' for none).
-- An event due now goes into the inbox, as a publish of one event without a key does with a
-- bare XADD (see `ingest`): so events due now are fanned out in the order they were
-- published, however they were. A delayed event goes straight into the log.
-- Returns the id stored for each event (the first event's, for a key seen before).
-- Redis does not undo what a script wrote before it failed: check every argument first.
for i = 2, #ARGV, 7 do
    if not tonumber(ARGV[i + 3]) or not tonumber(ARGV[i + 4]) or ARGV[i + 6] == nil then
        return redis.error_reply('ERR evq publish: event ' .. (i + 5) / 7 .. ' is malformed')
    end
end
local skew = skew_from(ARGV[1])
local ids = {}
local stored, delayed = 0, 0
for i = 2, #ARGV, 7 do
    local id, name, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local published_at, due_at, key = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
    local headers = ARGV[i + 6]
    local first = false
    if key ~= '' then
        first = redis.call('HGET', base .. 'keys', key)
    end
    if first then
        ids[#ids + 1] = first
    else
        if key ~= '' then
            redis.call('HSET', base .. 'keys', key, id)
        end
        if tonumber(due_at) > tonumber(published_at) then
            -- Also the count of events ever stored, which `evq status` shows as published
            -- (with the inbox's length).
            local seq = redis.call('INCR', base .. 'event_seq')
            store_event(seq, id, name, payload, published_at, shifted(due_at, skew), key,
                headers)
            delayed = delayed + 1
        else
            local entry = { 'i', id, 'n', name, 'p', payload, 't', published_at,
                'd', shifted(due_at, skew) }
            if key ~= '' then
                entry[#entry + 1] = 'k'
                entry[#entry + 1] = key
            end
            if headers ~= '' then
                entry[#entry + 1] = 'h'
                entry[#entry + 1] = headers
            end
            redis.call('XADD', base .. 'inbox', '*', unpack(entry))
        end
        stored = stored + 1
        ids[#ids + 1] = id
    end
end
if stored > 0 then
    redis.call('HSETNX', base .. 'meta', 'version', '1')
end
if delayed > 0 then
    -- (An XADD to the inbox wakes idle workers by itself.)
    wake()
end
return ids
