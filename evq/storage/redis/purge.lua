-- Delete dead letters and their history. ARGV: delivery ids. Returns how many.
local count = 0
for i = 1, #ARGV do
    local id = ARGV[i]
    local d = base .. 'd:' .. id
    local f = redis.call('HMGET', d, 'state', 'event_id')
    if f[1] == 'dead' then
        redis.call('DEL', d, base .. 'h:' .. id)
        redis.call('ZREM', base .. 'dead', id)
        redis.call('LREM', base .. 'ed:' .. f[2], 0, id)
        count = count + 1
    end
end
return count
