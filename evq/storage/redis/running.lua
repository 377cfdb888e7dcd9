-- How many unexpired leases owners whose id starts with ARGV[1] hold (a read).
local prefix = ARGV[1]
local count = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', base .. 'due:running', '(' .. fmt(clock()), '+inf')) do
    local owner = redis.call('HGET', base .. 'd:' .. id, 'lease_owner')
    if owner and string.sub(owner, 1, #prefix) == prefix then
        count = count + 1
    end
end
return count
