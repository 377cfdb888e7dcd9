-- Create replay deliveries, due now. ARGV: now, then per event: event_id, n, n receivers.
-- An event pruned meanwhile is skipped. Returns how many deliveries were created.
local now = fmt(now_from(ARGV[1]))
local count = 0
local i = 2
while i <= #ARGV do
    local event_id, n = ARGV[i], tonumber(ARGV[i + 1])
    if redis.call('HEXISTS', base .. 'e:' .. event_id, 'dispatched_at') == 1 then
        local receivers = {}
        for r = 1, n do
            receivers[r] = ARGV[i + 1 + r]
        end
        count = count + new_deliveries(event_id, receivers, now, now, 1)
    end
    i = i + 2 + n
end
if count > 0 then
    wake()
end
return count
