-- dicom-ai-node: Orthanc auto-forward rule (Orthanc 1.10 or later, Lua).
--
-- Forwards each study to the AI node once it is complete ("stable": no new instance for
-- the configuration's StableAge seconds), series by series in the order Orthanc received
-- them. It never forwards what the node made (recognised by its equipment identity), and
-- it remembers in a series metadata entry how many instances it forwarded, so a study
-- that becomes stable again (e.g. when the node's results arrive) forwards nothing new,
-- while a series that grew after it was forwarded is forwarded again.
--
-- Configuration it needs (see docs/recipes/orthanc.md):
--   "DicomModalities": { "ai-node": [ "<node AE title>", "<node host>", <node port> ] }
--   "UserMetadata":    { "AiNodeForwarded": 1024 }
--   "LuaScripts":      [ "/etc/orthanc/orthanc-autoforward.lua" ]

local TARGET = 'ai-node'            -- the node's name in DicomModalities
local MEMORY = 'AiNodeForwarded'    -- series metadata; declare it in UserMetadata
local NODE_MANUFACTURER = 'dicom-ai-node'
local NODE_UID_ROOT = '1.2.826.0.1.3680043.10.1453.'

-- Memory values: 'forwarded:<n>' (n instances sent to the node), 'own:<n>' (n instances
-- made by the node, never sent).

-- Orthanc loads this file into two Lua contexts (events and filters): keep the top level
-- free of side effects and of REST calls (a REST call while loading hangs Orthanc 1.10).

local function Log(message)
  print('ai-node-forward: ' .. message)
end

local function GetJson(uri)
  local body = RestApiGet(uri)
  if body == nil then
    return nil
  end
  return ParseJson(body)
end

-- The value of a top-level tag ('0008-0070') of an instance without its padding, or nil.
local function TagValue(instanceId, tag, present)
  if not present[tag] then
    return nil
  end
  local value = RestApiGet('/instances/' .. instanceId .. '/content/' .. tag)
  if value == nil then
    return nil
  end
  return (string.gsub(value, '[%s%z]+$', ''))
end

-- True when the node made this instance: its General Equipment names the node as
-- Manufacturer (0008,0070) and its Device UID (0018,1002) lies under the node's UID root.
-- Identity, not SOP class: the node may also make images.
local function MadeByNode(instanceId)
  local tags = GetJson('/instances/' .. instanceId .. '/content')
  if tags == nil then
    return false
  end
  local present = {}
  for _, tag in ipairs(tags) do
    present[string.lower(tag)] = true
  end
  local manufacturer = TagValue(instanceId, '0008-0070', present)
  if manufacturer ~= NODE_MANUFACTURER then
    return false
  end
  local device = TagValue(instanceId, '0018-1002', present)
  return device ~= nil and string.sub(device, 1, #NODE_UID_ROOT) == NODE_UID_ROOT
end

-- What the memory says about a series: kind ('forwarded', 'own' or nil) and count.
-- (All metadata at once: reading an absent entry would log an error in Orthanc's log.)
local function Recall(seriesId)
  local metadata = GetJson('/series/' .. seriesId .. '/metadata?expand')
  local value = metadata and metadata[MEMORY]
  if type(value) ~= 'string' then
    return nil, 0
  end
  local kind, count = string.match(value, '^(%a+):(%d+)$')
  if kind == nil then
    return nil, 0
  end
  return kind, tonumber(count)
end

local function Remember(seriesId, kind, count)
  local uri = '/series/' .. seriesId .. '/metadata/' .. MEMORY
  if RestApiPut(uri, kind .. ':' .. count) == nil then
    Log('cannot write ' .. MEMORY .. ' of series ' .. seriesId .. ': declare it in UserMetadata')
  end
end

-- The earliest reception time of a series' instances ('20250101T120000').
local function FirstReceived(instances)
  local first = nil
  for _, instanceId in ipairs(instances) do
    local received = RestApiGet('/instances/' .. instanceId .. '/metadata/ReceptionDate')
    if received ~= nil and (first == nil or received < first) then
      first = received
    end
  end
  return first or ''
end

-- Sends the listed instances to the node and waits for the end of the transfer.
local function Forward(instances)
  local request = { Resources = instances, Synchronous = true }
  local answer = RestApiPost('/modalities/' .. TARGET .. '/store', DumpJson(request, true))
  if answer == nil then
    return false
  end
  local result = ParseJson(answer)
  return result ~= nil and result['FailedInstancesCount'] == 0
end

-- Decides one series: returns it (as a table) when it is to be forwarded, nil otherwise.
local function Examine(position, seriesId)
  local series = GetJson('/series/' .. seriesId)
  if series == nil then
    return nil
  end
  local uid = series['MainDicomTags']['SeriesInstanceUID'] or '?'
  local instances = series['Instances']
  local count = #instances
  local kind, done = Recall(seriesId)
  local name = 'series ' .. uid .. ' (' .. seriesId .. ')'
  if kind ~= nil and done >= count then
    Log('skip ' .. name .. ': ' .. kind .. ' ' .. done .. ' of ' .. count .. ' instances, nothing new')
    return nil
  end
  if kind == 'own' or (kind == nil and MadeByNode(instances[1])) then
    Remember(seriesId, 'own', count)
    Log('skip ' .. name .. ': made by the node (' .. count .. ' instances)')
    return nil
  end
  return {
    id = seriesId, name = name, instances = instances, count = count, done = done,
    position = position, received = FirstReceived(instances),
  }
end

local function ReceivedEarlier(a, b)
  if a.received ~= b.received then
    return a.received < b.received
  end
  return a.position < b.position
end

function OnStableStudy(studyId, tags, metadata)
  local study = GetJson('/studies/' .. studyId)
  if study == nil then
    Log('study ' .. studyId .. ' is gone')
    return
  end
  local uid = study['MainDicomTags']['StudyInstanceUID'] or '?'
  Log('study ' .. uid .. ' (' .. studyId .. ') stable, ' .. #study['Series'] .. ' series')
  local todo = {}
  for position, seriesId in ipairs(study['Series']) do
    local series = Examine(position, seriesId)
    if series ~= nil then
      table.insert(todo, series)
    end
  end
  table.sort(todo, ReceivedEarlier)
  for index, series in ipairs(todo) do
    local what = series.done > 0 and 'forward again ' or 'forward '
    if not Forward(series.instances) then
      -- Stop here so that no later series overtakes this one; nothing is remembered.
      Log('failed to forward ' .. series.name .. ' to ' .. TARGET .. '; it and ' ..
          (#todo - index) .. ' later series go at the next stable event of the study')
      return
    end
    Remember(series.id, 'forwarded', series.count)
    Log(what .. series.name .. ' to ' .. TARGET .. ': ' .. series.count .. ' instances')
  end
end
