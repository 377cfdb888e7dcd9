-- Delete delivery statistics and heartbeats of workers older than a cutoff. ARGV: cutoff.
local cutoff = tonumber(ARGV[1])
local seconds = redis.call('ZRANGEBYSCORE', base .. 'stat_seconds', '-inf', '(' .. math.floor(cutoff))
for _, s in ipairs(seconds) do
    redis.call('HDEL', base .. 'stats', 'done:' .. s, 'failed:' .. s)
end
redis.call('ZREMRANGEBYSCORE', base .. 'stat_seconds', '-inf', '(' .. math.floor(cutoff))
for _, id in ipairs(redis.call('ZRANGEBYSCORE', base .. 'workers_seen', '-inf', '(' .. fmt(cutoff))) do
    redis.call('HDEL', base .. 'workers', id)
end
redis.call('ZREMRANGEBYSCORE', base .. 'workers_seen', '-inf', '(' .. fmt(cutoff))
return 0
