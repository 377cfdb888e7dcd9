-- One step of a worker: record outcomes (fenced by their attempt), fan events out, and lease
-- due deliveries, atomically. `Queue.record()` runs it with no events and a limit of 0.
--
-- ARGV: now ('' for the server's clock), sent_at, owner, limit, max_lost, the dead-letter
-- reason for an unregistered receiver (`\0` stands for the receiver; '' for a worker that
-- runs selected receivers only, which leaves every other receiver's deliveries alone and
-- leases only theirs), the reason for a
-- delivery lost max_lost times, the error of a lost attempt; then
--   n_outcomes, and per outcome: delivery_id, attempt, kind, started_at, finished_at,
--     retry_at, error, traceback, counts_as_failure (1/0), history entry (JSON, '' if the
--     attempt never started);
--   n_events, and per event to fan out: event_id, n, and its n receivers;
--   then receiver, lease_seconds pairs: the receivers this worker runs.
-- Returns {dead_lettered, next_due or '', then 12 fields per lease}.
local now = now_from(ARGV[1])
local skew = skew_from(ARGV[2])
local owner, limit, max_lost = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local unregistered, lost_reason, lost_error = ARGV[6], ARGV[7], ARGV[8]
local now_text = fmt(now)

-- Redis does not undo what a script wrote before it failed: check the times first.
local i = 10
for _ = 1, tonumber(ARGV[9]) do
    if not tonumber(ARGV[i + 4]) or (ARGV[i + 2] == 'retry' and not tonumber(ARGV[i + 5])) then
        return redis.error_reply('ERR evq lease: an outcome has no valid time')
    end
    i = i + 10
end

-- Outcomes, each only while its delivery is still at the attempt its lease took.
i = 10
for _ = 1, tonumber(ARGV[9]) do
    local id, attempt, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local started_at, finished_at = ARGV[i + 3], shifted(ARGV[i + 4], skew)
    local retry_at, err, traceback = shifted(ARGV[i + 5], skew), ARGV[i + 6], ARGV[i + 7]
    local counts, entry = tonumber(ARGV[i + 8]), ARGV[i + 9]
    i = i + 10
    if started_at ~= '' then
        local bucket = math.floor(tonumber(finished_at))
        local field = (kind == 'done' and 'done:' or 'failed:') .. bucket
        redis.call('HINCRBY', base .. 'stats', field, 1)
        redis.call('ZADD', base .. 'stat_seconds', bucket, bucket)
    end
    local d = base .. 'd:' .. id
    local held = redis.call('HMGET', d, 'state', 'attempt', 'failures')
    if held[1] == 'running' and held[2] == attempt then
        if entry ~= '' then
            redis.call('HSET', base .. 'h:' .. id, attempt, entry)
        end
        redis.call('ZREM', base .. 'due:running', id)
        redis.call('HDEL', d, 'lease_owner')
        local failures = tonumber(held[3])
        if kind == 'done' then
            redis.call('HSET', d, 'state', 'done', 'finished_at', finished_at)
            redis.call('HDEL', d, 'due_at')
        elseif kind == 'dead' then
            redis.call('HSET', d, 'state', 'dead', 'finished_at', finished_at,
                'failures', failures + counts, 'last_error', err, 'traceback', traceback)
            redis.call('HDEL', d, 'due_at')
            redis.call('ZADD', base .. 'dead', finished_at, id)
        elseif kind == 'retry' then
            failures = failures + counts
            redis.call('HSET', d, 'state', 'pending', 'due_at', retry_at,
                'finished_at', finished_at, 'failures', failures, 'last_error', err,
                'traceback', traceback)
            redis.call('ZADD', due_set('pending', failures), retry_at, id)
        else -- release: an attempt that never started gives its number back
            if started_at == '' then
                redis.call('HINCRBY', d, 'attempt', -1)
            end
            redis.call('HSET', d, 'state', 'pending', 'due_at', finished_at)
            redis.call('ZADD', due_set('pending', failures), finished_at, id)
        end
    end
end

-- Fan-out: the worker routed these events; one that another worker fanned out meanwhile is
-- left alone.
local n_events = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_events do
    local event_id, n = ARGV[i], tonumber(ARGV[i + 1])
    if redis.call('ZSCORE', base .. 'undispatched', event_id) then
        local event = base .. 'e:' .. event_id
        local due = redis.call('HGET', event, 'due_at')
        for r = 1, n do
            new_delivery(event_id, ARGV[i + 1 + r], due, now_text, 0)
        end
        redis.call('ZREM', base .. 'undispatched', event_id)
        redis.call('ZREM', base .. 'delayed', event_id)
        redis.call('HDEL', event, 'due_at')
        redis.call('HSET', event, 'dispatched_at', now_text)
        redis.call('HINCRBY', base .. 'counters', 'dispatched', 1)
    end
    i = i + 2 + n
end

local lease_seconds = {}
for j = i, #ARGV, 2 do
    lease_seconds[ARGV[j]] = ARGV[j + 1]
end
local selected = nil
if unregistered == '' then
    selected = lease_seconds
end

-- The due deliveries, oldest first: at most `limit` from each set, merged.
local candidates = {}
if limit > 0 then
    for _, name in ipairs(UNFINISHED) do
        for _, found in ipairs(due_in(base .. name, now, limit, selected)) do
            candidates[#candidates + 1] = { found[1], found[2], name }
        end
    end
    table.sort(candidates, function(a, b)
        if a[2] ~= b[2] then
            return a[2] < b[2]
        end
        return tonumber(a[1]) < tonumber(b[1])
    end)
end

-- Mirrors `evq.storage.rules.lease_plan` and `dead_reason` (the contract suite checks that
-- they agree): a delivery still running has an expired lease, counts as a lost attempt, and
-- is taken alone; a delivery of an unregistered receiver, or lost max_lost times, is dead.
local result = { 0, '' }
local taken = 0
for k = 1, math.min(limit, #candidates) do
    local id, set = candidates[k][1], base .. candidates[k][3]
    local d = base .. 'd:' .. id
    local f = redis.call('HMGET', d, 'state', 'attempt', 'attempt_base', 'failures', 'receiver',
        'event_id', 'replay', 'lease_owner', 'started_at')
    local lost = f[1] == 'running'
    if lost and taken > 0 then
        break
    end
    if not (f[1] and tonumber(f[2]) and tonumber(f[3]) and tonumber(f[4]) and f[5] and f[6]) then
        -- Not a delivery evq wrote (deleted or changed by hand): out of the queue, so that
        -- it cannot stall everything behind it.
        redis.call('ZREM', set, id)
    else
        local attempt, attempt_base, failures = tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
        local receiver = f[5]
        if lost then
            redis.call('HSET', base .. 'h:' .. id, attempt, cjson.encode(
                { f[8] or cjson.null, f[9] or cjson.null, now_text, 'lost', lost_error }))
        end
        local seconds = lease_seconds[receiver]
        local reason = nil
        if seconds == nil then
            local at = string.find(unregistered, '\0', 1, true)
            reason = string.sub(unregistered, 1, at - 1) .. receiver
                .. string.sub(unregistered, at + 1)
        elseif attempt - attempt_base - failures >= max_lost then
            reason = lost_reason
        end
        redis.call('ZREM', set, id)
        redis.call('HDEL', d, 'lease_owner')
        if reason then
            redis.call('HSET', d, 'state', 'dead', 'finished_at', now_text, 'last_error', reason)
            redis.call('HDEL', d, 'due_at')
            redis.call('ZADD', base .. 'dead', now_text, id)
            result[1] = result[1] + 1
        else
            local expiry = fmt(now + tonumber(seconds))
            redis.call('HSET', d, 'state', 'running', 'attempt', attempt + 1, 'due_at', expiry,
                'lease_owner', owner, 'started_at', now_text)
            redis.call('ZADD', base .. 'due:running', expiry, id)
            local e = redis.call('HMGET', base .. 'e:' .. f[6], 'name', 'payload',
                'published_at', 'headers')
            for _, value in ipairs({ id, attempt + 1, attempt_base, failures, receiver, f[6],
                e[1] or '', e[2] or '', e[3] or '0', seconds, f[7] or '0', e[4] or '' }) do
                result[#result + 1] = tostring(value)
            end
            taken = taken + 1
            if lost then
                break
            end
        end
    end
end
if taken == 0 then
    result[2] = next_due(selected)
end
return result
