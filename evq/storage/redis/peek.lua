-- What a worker needs to know before it leases: the time, when the next delivery is due,
-- and the names of the next events to fan out, so that it can route them. Its one write:
-- events in the inbox move into the log first (`ingest`), as many as it reads.
-- ARGV: now ('' for the server's clock), dispatch_limit, then the receivers whose deliveries
-- count for next_due (none: every receiver's).
-- Returns {now, next_due or '', id, name, id, name, ...}.
local now = now_from(ARGV[1])
local selected = nil
if #ARGV > 2 then
    selected = {}
    for j = 3, #ARGV do
        selected[ARGV[j]] = true
    end
end
local result = { fmt(now), next_due(selected) }
local limit = tonumber(ARGV[2])
if limit > 0 then
    ingest(limit)
    for _, id in ipairs(redis.call('ZRANGE', base .. 'undispatched', 0, limit - 1)) do
        result[#result + 1] = id
        result[#result + 1] = redis.call('HGET', base .. 'e:' .. id, 'name') or ''
    end
end
return result
