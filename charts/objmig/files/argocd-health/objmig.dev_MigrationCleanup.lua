-- Argo CD health check for objmig.dev/MigrationCleanup
-- (argocd-cm key: resource.customizations.health.objmig.dev_MigrationCleanup).
-- Healthy: Complete. Degraded: Failed. Suspended: Blocked (a deletion gate does not hold, e.g.
-- the grace period, or an approval digest that does not match). Progressing: otherwise.
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = status.conditions
local phase = status.phase

local failed = condition(conditions, "Failed")
if phase == "Failed" or (failed ~= nil and failed.status == "True") then
  hs.status = "Degraded"
  hs.message = message_of(failed, "The cleanup failed")
  return hs
end

local complete = condition(conditions, "Complete")
if phase == "Completed" or (complete ~= nil and complete.status == "True") then
  hs.status = "Healthy"
  hs.message = message_of(complete, "Complete")
  return hs
end

if phase == "Blocked" then
  hs.status = "Suspended"
  local gates = status.unmetGates
  if gates ~= nil and #gates > 0 then
    local parts = {}
    for _, gate in ipairs(gates) do
      parts[#parts + 1] = (gate.gate or "gate") .. ": " .. (gate.message or gate.reason or "")
    end
    hs.message = "Blocked: " .. table.concat(parts, "; ")
  else
    hs.message = message_of(condition(conditions, "GatesPassed"), "Blocked by a deletion gate")
  end
  return hs
end

hs.status = "Progressing"
hs.message = phase
return hs
