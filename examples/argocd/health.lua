-- Argo CD health check for lossgate.io/ModelRollout (install it with argocd-cm.yaml next to this file).
-- A status the operator has not caught up with yet (observedGeneration behind metadata.generation)
-- is Progressing whatever its phase says; then: Promoted -> Healthy, Watching (promoted, in the
-- post-promotion watch: the promoted model serves) -> Healthy, Paused -> Suspended,
-- RolledBack or Failed -> Degraded, anything else (Pending, Progressing, no status) -> Progressing.
-- The message is status.message: the operator's one line with the step and the numbers.
local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the lossgate operator to pick up the rollout"
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the lossgate operator to observe generation " .. tostring(generation)
  return hs
end
local phase = status.phase
if phase == "Promoted" or phase == "Watching" then
  hs.status = "Healthy"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
if status.message ~= nil and status.message ~= "" then
  hs.message = status.message
elseif phase ~= nil then
  hs.message = "phase " .. phase
else
  hs.message = "Waiting for the lossgate operator"
end
return hs
