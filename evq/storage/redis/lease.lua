-- One step of a worker: record outcomes (fenced by their attempt), fan events out, and lease
-- due deliveries, atomically. `Queue.record()` runs it with no events and a limit of 0.
--
-- ARGV: now ('' for the server's clock), sent_at, owner, limit, max_lost, the dead-letter
-- reason for an unregistered receiver (`\0` stands for the receiver; '' for a worker that
-- runs selected receivers only, which leaves every other receiver's deliveries alone and
-- leases only theirs), the reason for a delivery lost max_lost times, the error of a lost
-- attempt, peek_limit (after taking leases, read this many events to fan out next, for the
-- worker's next step; 0: none), how many leases the worker's step took already (a lost
-- delivery is taken only in a batch of its own, so it is left for the next step then), then
--   the outcomes, as JSON: a list of [delivery_id, attempt, kind, started_at, finished_at,
--     retry_at, error, traceback, counts_as_failure (1/0), history entry (JSON text, '' if
--     the attempt never started)], every time as text ('' for none);
--   the events to fan out, as JSON: a list of [event_id, receiver, receiver, ...];
--   then receiver, lease_seconds pairs: the receivers this worker runs.
-- Arguments travel as two JSON texts, not hundreds of arguments: packing and parsing them
-- one by one was most of a worker's time on the client.
-- Returns JSON: [dead_lettered, next_due on the caller's clock or '' ('lost' when leases were
-- taken and the batch ended at a lost delivery: taken alone, or left for a batch of its own),
-- n, then 12 fields for each of the n leases,
-- then event id, name pairs of the next events to fan out (only when a lease was taken)].
local now = now_from(ARGV[1])
local skew = skew_from(ARGV[2])
local owner, limit, max_lost = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local unregistered, lost_reason, lost_error = ARGV[6], ARGV[7], ARGV[8]
local peek_limit = tonumber(ARGV[9])
local taken_before = tonumber(ARGV[12])
local now_text = fmt(now)
local decoded, outcomes = pcall(cjson.decode, ARGV[10])
local decoded_events, events = pcall(cjson.decode, ARGV[11])
if not (decoded and decoded_events and type(outcomes) == 'table' and type(events) == 'table') then
    return redis.error_reply('ERR evq lease: outcomes or events are not JSON lists')
end

-- Redis does not undo what a script wrote before it failed: check the outcomes first.
for _, o in ipairs(outcomes) do
    if type(o) ~= 'table' or #o ~= 10 or not tonumber(o[5])
        or (o[3] == 'retry' and not tonumber(o[6])) then
        return redis.error_reply('ERR evq lease: an outcome has no valid time')
    end
    for k = 1, 10 do
        if k ~= 9 and type(o[k]) ~= 'string' then
            return redis.error_reply('ERR evq lease: an outcome is malformed')
        end
    end
end

-- Outcomes, each only while its delivery is still at the attempt its lease took.
local stats, seconds_seen, finished_running = {}, {}, {}
for _, o in ipairs(outcomes) do
    local id, attempt, kind = o[1], o[2], o[3]
    local started_at, finished_at = o[4], shifted(o[5], skew)
    local retry_at, err, traceback = shifted(o[6], skew), o[7], o[8]
    local counts, entry = tonumber(o[9]), o[10]
    if started_at ~= '' then
        local bucket = math.floor(tonumber(finished_at))
        local field = (kind == 'done' and 'done:' or 'failed:') .. bucket
        stats[field] = (stats[field] or 0) + 1
        seconds_seen[bucket] = true
    end
    local d = base .. 'd:' .. id
    local held = redis.call('HMGET', d, 'state', 'attempt', 'failures')
    if held[1] == 'running' and held[2] == attempt then
        if entry ~= '' then
            redis.call('HSET', base .. 'h:' .. id, attempt, entry)
        end
        finished_running[#finished_running + 1] = id
        local failures = tonumber(held[3])
        if kind == 'done' then
            redis.call('HSET', d, 'state', 'done', 'finished_at', finished_at)
            redis.call('HDEL', d, 'due_at', 'lease_owner')
        elseif kind == 'dead' then
            redis.call('HSET', d, 'state', 'dead', 'finished_at', finished_at,
                'failures', failures + counts, 'last_error', err, 'traceback', traceback)
            redis.call('HDEL', d, 'due_at', 'lease_owner')
            redis.call('ZADD', base .. 'dead', finished_at, id)
        elseif kind == 'retry' then
            failures = failures + counts
            redis.call('HSET', d, 'state', 'pending', 'due_at', retry_at,
                'finished_at', finished_at, 'failures', failures, 'last_error', err,
                'traceback', traceback)
            redis.call('HDEL', d, 'lease_owner')
            redis.call('ZADD', due_set('pending', failures), retry_at, id)
        else -- release: an attempt that never started gives its number back
            if started_at == '' then
                redis.call('HINCRBY', d, 'attempt', -1)
            end
            redis.call('HSET', d, 'state', 'pending', 'due_at', finished_at)
            redis.call('HDEL', d, 'lease_owner')
            redis.call('ZADD', due_set('pending', failures), finished_at, id)
        end
    end
end
call_many('ZREM', base .. 'due:running', finished_running)
for field, count in pairs(stats) do
    redis.call('HINCRBY', base .. 'stats', field, count)
end
for bucket in pairs(seconds_seen) do
    redis.call('ZADD', base .. 'stat_seconds', bucket, bucket)
end

-- Fan-out: the worker routed these events; one that another worker fanned out meanwhile is
-- left alone.
local fanned = {}
for _, e in ipairs(events) do
    local event_id = e[1]
    if redis.call('ZSCORE', base .. 'undispatched', event_id) then
        local event = base .. 'e:' .. event_id
        local due = redis.call('HGET', event, 'due_at')
        local receivers = {}
        for r = 2, #e do
            receivers[r - 1] = e[r]
        end
        new_deliveries(event_id, receivers, due, now_text, 0)
        redis.call('HDEL', event, 'due_at')
        redis.call('HSET', event, 'dispatched_at', now_text)
        fanned[#fanned + 1] = event_id
    end
end
if #fanned > 0 then
    call_many('ZREM', base .. 'undispatched', fanned)
    call_many('ZREM', base .. 'delayed', fanned)
    redis.call('HINCRBY', base .. 'counters', 'dispatched', #fanned)
end

local lease_seconds = {}
for j = 13, #ARGV, 2 do
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
local dead_lettered, leased, running = 0, {}, {}
local taken = 0
local ended_at_lost = false
for k = 1, math.min(limit, #candidates) do
    local id, set = candidates[k][1], base .. candidates[k][3]
    local d = base .. 'd:' .. id
    local f = redis.call('HMGET', d, 'state', 'attempt', 'attempt_base', 'failures', 'receiver',
        'event_id', 'replay', 'lease_owner', 'started_at')
    local lost = f[1] == 'running'
    if lost and taken + taken_before > 0 then
        ended_at_lost = true
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
        if reason then
            redis.call('HSET', d, 'state', 'dead', 'finished_at', now_text, 'last_error', reason)
            redis.call('HDEL', d, 'due_at', 'lease_owner')
            redis.call('ZADD', base .. 'dead', now_text, id)
            dead_lettered = dead_lettered + 1
        else
            local expiry = fmt(now + tonumber(seconds))
            redis.call('HSET', d, 'state', 'running', 'attempt', attempt + 1, 'due_at', expiry,
                'lease_owner', owner, 'started_at', now_text)
            running[#running + 1] = expiry
            running[#running + 1] = id
            local e = redis.call('HMGET', base .. 'e:' .. f[6], 'name', 'payload',
                'published_at', 'headers')
            for _, value in ipairs({ id, attempt + 1, attempt_base, failures, receiver, f[6],
                e[1] or '', e[2] or '', e[3] or '0', seconds, f[7] or '0', e[4] or '' }) do
                leased[#leased + 1] = tostring(value)
            end
            taken = taken + 1
            if lost then
                ended_at_lost = true
                break
            end
        end
    end
end
-- After the loop: a lost delivery leaves `due:running` above and comes back here.
call_many('ZADD', base .. 'due:running', running)

local result = { dead_lettered, '', taken }
for _, value in ipairs(leased) do
    result[#result + 1] = value
end
if taken == 0 then
    result[2] = unshifted(next_due(selected), skew)
elseif ended_at_lost then
    result[2] = 'lost'
end
if taken > 0 and peek_limit > 0 then
    -- The worker comes back once these are done: the events it will route then, read now
    -- (a step fewer for it; one fanned out meanwhile by another worker is skipped then).
    ingest(peek_limit)
    for _, id in ipairs(redis.call('ZRANGE', base .. 'undispatched', 0, peek_limit - 1)) do
        result[#result + 1] = id
        result[#result + 1] = redis.call('HGET', base .. 'e:' .. id, 'name') or ''
    end
end
return cjson.encode(result)
