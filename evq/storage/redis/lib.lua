-- What evq's scripts share: key names, clocks. Each script is loaded with the definitions
-- below that it uses put before it (connection.py's `_script_text`).
-- KEYS[1] is the queue's prefix, `{evq:<prefix>}:`; every key of the queue starts with it, so
-- all of them share one hash tag (one Cluster slot) and the script runs where they live.
local base = KEYS[1]

-- The server's clock, in seconds: due times and lease expiry never trust a worker's clock.
local function clock()
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Times are stored as text with microseconds: a Lua number given to redis.call would keep
-- only 14 significant digits.
local function fmt(seconds)
    return string.format('%.6f', seconds)
end

-- `now` as a caller gave it (tests move time), or the server's clock if it gave ''.
local function now_from(arg)
    if arg == '' then
        return clock()
    end
    return tonumber(arg)
end

-- Absolute times a client computed on its own clock (retry times, lease renewals, delays) are
-- moved onto the server's clock when the two disagree by more than a second; `sent` is the
-- client's clock when it sent the call.
local function skew_from(sent)
    if sent == '' then
        return 0
    end
    local skew = clock() - tonumber(sent)
    if math.abs(skew) <= 1 then
        return 0
    end
    return skew
end

local function shifted(time_text, skew)
    if skew == 0 or time_text == '' then
        return time_text
    end
    return fmt(tonumber(time_text) + skew)
end

-- The other way: a time on the server's clock, on the caller's (`next_due`, which a worker
-- compares with its own clock).
local function unshifted(time_text, skew)
    return shifted(time_text, -skew)
end

-- The sorted set (scored by due time) that holds an unfinished delivery: `pending` (due now
-- or scheduled later), `retrying` (failed before) or `running` (score: lease expiry).
local function due_set(state, failures)
    if state == 'running' then
        return base .. 'due:running'
    end
    if tonumber(failures) > 0 then
        return base .. 'due:retrying'
    end
    return base .. 'due:pending'
end

local UNFINISHED = { 'due:pending', 'due:retrying', 'due:running' }

-- The due deliveries of the sorted set `key`, oldest first, at most `limit`: {id, due} each.
-- With `selected` (a set of receivers), only theirs: the others' are read past, and left.
local function due_in(key, now, limit, selected)
    local found = {}
    if selected == nil then
        local page = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0,
            limit)
        for k = 1, #page, 2 do
            found[#found + 1] = { page[k], tonumber(page[k + 1]) }
        end
        return found
    end
    local offset = 0
    while #found < limit do
        local page = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT',
            offset, 256)
        for k = 1, #page, 2 do
            if #found < limit
                and selected[redis.call('HGET', base .. 'd:' .. page[k], 'receiver') or ''] then
                found[#found + 1] = { page[k], tonumber(page[k + 1]) }
            end
        end
        if #page < 512 then
            break
        end
        offset = offset + 256
    end
    return found
end

-- How many due deliveries a worker that runs selected receivers only reads past, at most,
-- to find when its next one is due.
local SELECTED_SCAN = 1024

-- When the first delivery in the sorted set `key` is due, among those to `selected`
-- receivers (a set; nil: any). Past SELECTED_SCAN others, it looks only for one of theirs
-- due now, and otherwise answers "look again in a second" rather than read on.
local function first_due(key, selected)
    if selected == nil then
        return tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
    end
    local last = nil
    for offset = 0, SELECTED_SCAN - 1, 128 do
        local page = redis.call('ZRANGE', key, offset, offset + 127, 'WITHSCORES')
        for k = 1, #page, 2 do
            if selected[redis.call('HGET', base .. 'd:' .. page[k], 'receiver') or ''] then
                return tonumber(page[k + 1])
            end
            last = tonumber(page[k + 1])
        end
        if #page < 256 then
            return nil
        end
    end
    -- Past the others' backlog: one of its own may be due now all the same (leasing reads
    -- the whole due range for it), else look again in a second.
    local now = clock()
    local due = due_in(key, now, 1, selected)
    if due[1] then
        return due[1][2]
    end
    return math.max(last, now + 1)
end

-- An entry of the inbox, a stream that a publish of one event due now writes with a single
-- XADD (publishing.py), as the event it stands for: fields i (id), n (name), p (payload),
-- t (published_at, the publisher's clock), and k (idempotency key, already recorded in
-- `keys`), h (headers) and d (due_at, on the server's clock: written by publish.lua) when
-- there are some. Without d, the event is due at t, or when its XADD ran (the entry's id, by
-- the server's clock) if the publisher's clock is more than a second away from the server's.
local function inbox_event(entry)
    local f, values = {}, entry[2]
    for j = 1, #values - 1, 2 do
        f[values[j]] = values[j + 1]
    end
    local added = tonumber(string.match(entry[1], '^%d+')) / 1000
    local published = f.t
    local due = published
    if not tonumber(published) then
        published = fmt(added)
        due = published
    elseif tonumber(f.d) then
        due = f.d
    elseif math.abs(added - tonumber(published)) > 1 then
        due = fmt(added)
    end
    return { id = f.i or '', name = f.n or '', payload = f.p or '', published_at = published,
        due_at = due, key = f.k or '', headers = f.h or '' }
end

-- When the earliest delivery (to `selected` receivers, if given) is due; an event not fanned
-- out yet is due since it was published. Returns '' if nothing is.
local function next_due(selected)
    local best = nil
    for _, name in ipairs(UNFINISHED) do
        local first = first_due(base .. name, selected)
        if first and (best == nil or first < best) then
            best = first
        end
    end
    -- An event still in the inbox is due (see `inbox_event`).
    local entry = redis.call('XRANGE', base .. 'inbox', '-', '+', 'COUNT', 1)[1]
    if entry then
        local due = tonumber(inbox_event(entry).due_at)
        if best == nil or due < best then
            best = due
        end
    end
    -- An event in the log not fanned out yet is due since it was stored: its published_at,
    -- or its due_at if earlier (an event whose publisher's clock was ahead of the server's
    -- is due when the server stored it; see `inbox_event`).
    local oldest = redis.call('ZRANGE', base .. 'undispatched', 0, 0)
    if oldest[1] then
        local times = redis.call('HMGET', base .. 'e:' .. oldest[1], 'published_at', 'due_at')
        for _, text in ipairs(times) do
            local at = tonumber(text)
            if at and (best == nil or at < best) then
                best = at
            end
        end
    end
    if best == nil then
        return ''
    end
    return fmt(best)
end

-- Tell idle workers there may be work: they block reading the `wake` stream (and the
-- inbox, whose every publish wakes them by itself; see wakeup.py). One entry is kept: a
-- worker reads past the last it saw.
local function wake()
    redis.call('XADD', base .. 'wake', 'MAXLEN', '1', '*', 'w', '')
end

-- Run `command` on `key` with the arguments in `list`, a few thousand at a time (Lua's
-- unpack has a limit): one ZREM or ZADD for a whole batch instead of one per member.
local function call_many(command, key, list)
    for first = 1, #list, 4000 do
        redis.call(command, key, unpack(list, first, math.min(first + 3999, #list)))
    end
end

-- Create the deliveries of an event to `receivers` (a list), pending from `due`: one INCRBY,
-- one RPUSH and one ZADD for all of them. Returns how many were created.
local function new_deliveries(event_id, receivers, due, created, replay)
    local n = #receivers
    if n == 0 then
        return 0
    end
    local last = redis.call('INCRBY', base .. 'delivery_seq', n)
    local ids, scored = {}, {}
    for r = 1, n do
        local id = tostring(last - n + r)
        redis.call('HSET', base .. 'd:' .. id, 'event_id', event_id, 'receiver', receivers[r],
            'state', 'pending', 'due_at', due, 'attempt', 0, 'failures', 0, 'attempt_base', 0,
            'created_at', created, 'replay', replay)
        ids[r] = id
        scored[2 * r - 1] = due
        scored[2 * r] = id
    end
    redis.call('RPUSH', base .. 'ed:' .. event_id, unpack(ids))
    redis.call('ZADD', base .. 'due:pending', unpack(scored))
    return n
end

-- Store a new event in the log, with sequence number `seq` (the order of fan-out): its hash,
-- the indexes by id and by name, `undispatched`, and `delayed` if it is not due yet. `key`
-- and `headers` are '' for none; times are text.
local function store_event(seq, id, name, payload, published_at, due_at, key, headers)
    local fields = { 'name', name, 'payload', payload, 'published_at', published_at,
        'due_at', due_at }
    if key ~= '' then
        fields[#fields + 1] = 'key'
        fields[#fields + 1] = key
    end
    if headers ~= '' then
        fields[#fields + 1] = 'headers'
        fields[#fields + 1] = headers
    end
    redis.call('HSET', base .. 'e:' .. id, unpack(fields))
    redis.call('ZADD', base .. 'log', 0, id)
    redis.call('ZADD', base .. 'n:' .. name, 0, id)
    redis.call('SADD', base .. 'names', name)
    redis.call('ZADD', base .. 'undispatched', seq, id)
    if tonumber(due_at) > tonumber(published_at) then
        redis.call('ZADD', base .. 'delayed', due_at, id)
    end
end

-- Move up to `limit` events from the inbox (see `inbox_event`) into the log, oldest first,
-- and delete their entries. An entry without an id (not one evq wrote), or whose event is
-- stored already (an XADD sent again after a broken connection), is dropped. Returns how
-- many entries were taken.
local function ingest(limit)
    local entries = redis.call('XRANGE', base .. 'inbox', '-', '+', 'COUNT', limit)
    if #entries == 0 then
        return 0
    end
    local seq = tonumber(redis.call('GET', base .. 'event_seq') or '0')
    local first_seq, taken = seq, {}
    for k, entry in ipairs(entries) do
        taken[k] = entry[1]
        local e = inbox_event(entry)
        if e.id ~= '' and redis.call('EXISTS', base .. 'e:' .. e.id) == 0 then
            seq = seq + 1
            store_event(seq, e.id, e.name, e.payload, e.published_at, e.due_at, e.key,
                e.headers)
        end
    end
    if seq > first_seq then
        redis.call('SET', base .. 'event_seq', seq)
    end
    call_many('XDEL', base .. 'inbox', taken)
    return #entries
end
