-- Create replay deliveries, due now. ARGV: now, then per event: event_id, n, n receivers.
-- An event pruned meanwhile is skipped. Returns how many deliveries were created.
local now = fmt(now_from(ARGV[1]))
local count = 0
local i = 2
while i <= #ARGV do
    local event_id, n = ARGV[i], tonumber(ARGV[i + 1])
    if redis.call('HEXISTS', base .. 'e:' .. event_id, 'dispatched_at') == 1 then
        for r = 1, n do
            new_delivery(event_id, ARGV[i + 1 + r], now, now, 1)
            count = count + 1
        end
    end
    i = i + 2 + n
end
if count > 0 then
    wake()
end
return count
