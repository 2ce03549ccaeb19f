-- Argo CD health check for objmig.dev/ObjectMigration
-- (argocd-cm key: resource.customizations.health.objmig.dev_ObjectMigration).
-- Healthy: CutOver, or Completed (a dry run's plan is ready). Suspended: Paused, or waiting for
-- spec.cutover.approved. Degraded: Failed, a target directory short of space (TargetSpaceLow,
-- paused until there is room), cutover blocked by failed objects or a gate that cannot pass
-- without a change, or a run that is Degraded (error rate) or Stalled (throughput).
-- Progressing: everything else (scanning, copying, verifying).
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

local function is_true(c)
  return c ~= nil and c.status == "True"
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
if phase == "Failed" or is_true(failed) then
  hs.status = "Degraded"
  hs.message = message_of(failed, "The migration failed")
  return hs
end

-- Someone has to make room: the run waits, paused, until there is.
local space = condition(conditions, "TargetSpaceLow")
if is_true(space) then
  hs.status = "Degraded"
  hs.message = "Target space low: " .. message_of(space, "the target filesystem is short of space")
  return hs
end

local paused = condition(conditions, "Paused")
if phase == "Paused" or is_true(paused) then
  hs.status = "Suspended"
  hs.message = message_of(paused, "The migration is paused")
  return hs
end

local cut = condition(conditions, "CutOver")
if phase == "CutOver" or is_true(cut) then
  hs.status = "Healthy"
  hs.message = message_of(cut, "Cut over")
  return hs
end

if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = "Completed"
  return hs
end

if phase == "AwaitingCutover" then
  local ready = condition(conditions, "CutoverReady")
  local verified = condition(conditions, "Verified")
  local reason = ready ~= nil and ready.reason or ""
  if reason == "AwaitingApproval" then
    hs.status = "Suspended"
    hs.message = message_of(ready, "Waiting for spec.cutover.approved: true")
    return hs
  end
  -- Gates that stay shut until someone changes the spec or the source.
  local blocked = {
    FailureBudgetExceeded = true,
    FailureRatioExceeded = true,
    NothingSelected = true,
    NothingVerified = true,
    CatchUpNotConverging = true,
  }
  if blocked[reason] then
    hs.status = "Degraded"
    hs.message = "Cutover blocked: " .. message_of(ready, reason)
    return hs
  end
  if verified ~= nil and verified.status == "False" and verified.reason == "SomeObjectsFailed" then
    hs.status = "Degraded"
    hs.message = "Cutover blocked: " .. message_of(verified, "some objects failed")
    return hs
  end
end

-- Still running, but unwell: too many objects fail, or nothing moves.
for _, kind in ipairs({ "Degraded", "Stalled" }) do
  local unwell = condition(conditions, kind)
  if is_true(unwell) then
    hs.status = "Degraded"
    hs.message = kind .. ": " .. message_of(unwell, unwell.reason or kind)
    return hs
  end
end

hs.status = "Progressing"
local progress = status.progress
if progress ~= nil and progress.percent ~= nil then
  hs.message = phase .. " (" .. tostring(progress.percent) .. "%)"
else
  hs.message = phase
end
return hs
