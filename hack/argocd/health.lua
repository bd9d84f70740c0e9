-- Argo CD health of a weft resource (MeshService, TrafficPolicy,
-- PeerAuthentication), read from the conditions weft writes:
--   Degraded:    Stalled=True (nothing changes until someone edits a
--                resource), or Ready=False for any reason but Progressing
--                (a proxy rejected the configuration, or the spec cannot
--                be applied);
--   Healthy:     Ready=True for the current generation;
--   Progressing: anything else (no status yet, a newer generation not yet
--                looked at, proxies still acknowledging).
-- It uses only what Argo CD gives custom health scripts by default (the
-- base and table libraries).
local hs = {status = "Progressing", message = "Waiting for weft to report status"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "weft has not yet looked at generation " .. tostring(generation)
  return hs
end

local stalled, ready
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" then
    stalled = c
  elseif c.type == "Ready" then
    ready = c
  end
end

local function describe(c)
  return tostring(c.reason) .. ": " .. tostring(c.message)
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end
if ready == nil then
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.message = "Ready describes generation " .. tostring(ready.observedGeneration) .. ", not " .. tostring(generation)
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = tostring(ready.message)
elseif ready.status == "False" and ready.reason ~= "Progressing" then
  hs.status = "Degraded"
  hs.message = describe(ready)
else
  hs.message = describe(ready)
end
return hs
