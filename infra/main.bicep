// Teams virtual appointments: a Python 3.11 Azure Functions app on Flex Consumption that turns
// scheduling-system webhooks into Teams virtual appointments through Microsoft Graph.
// Entry point for `azd provision` / `azd up` (parameters: main.parameters.json).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer the Flex Consumption plan: `az functionapp list-flexconsumption-locations`.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group name; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Comma-separated HMAC secrets for webhook signatures (azd env WEBHOOK_SECRETS). Stored only in Key Vault.')
@secure()
@minLength(32)
param webhookSecrets string

// Each item: { name, kind, timeZone?, phoneRegion?, subject?, sendSms?, sendEmail?, sendSmsReminder?,
// callbackUrl? }. callbackUrl: https, where the app POSTs the source's signed callbacks.
// name: 1-32 of a-z0-9, not `appointments` (Bicep checks the length; the app, the characters).
// kind: native, hl7v2, calendly or calcom. app/sources.bicep declares and checks the type.
@description('Named sources (SPEC "Sources"): one POST /api/webhooks/{name} route each, with SOURCES__{name}__... settings.')
param sources array = []

@description('JSON object: source name -> its comma-separated secrets (azd env SOURCE_SECRETS). Stored only in Key Vault.')
@secure()
param sourceSecrets string = ''

@description('JSON object: source name -> its comma-separated whsec_ callback secrets (azd env SOURCE_CALLBACK_SECRETS), for every source with a callbackUrl. Stored only in Key Vault.')
@secure()
param sourceCallbackSecrets string = ''

@description('https URL the default source `appointments` calls back (azd env CALLBACK_URL); empty: no callbacks.')
param callbackUrl string = ''

@description('Comma-separated whsec_ secrets that sign the default source\'s callbacks (azd env CALLBACK_SECRETS); used with callbackUrl. Stored only in Key Vault.')
@secure()
param callbackSecrets string = ''

@description('Callback retry delays in seconds, comma-separated (CALLBACK_RETRY_SCHEDULE); empty: the app default 5,300,1800,7200,18000,36000,36000.')
param callbackRetrySchedule string = ''

@description('Days after an appointment ends (or is cancelled) until its clients\' names, e-mail addresses and phone numbers are erased by the daily retention pass (RETENTION_DAYS); 0 keeps them.')
@minValue(0)
@maxValue(36500)
param retentionDays int = 30

@description('Grant VirtualAppointmentNotification.Send so the app can send SMS (needs Teams Premium).')
param enableSms bool = false

@description('Attendance after each appointment: grant OnlineMeetingArtifact.Read.All so the app reads the attendance reports ATTENDANCE_DELAY_MINUTES after each end; false grants nothing and sets ATTENDANCE_ENABLED=false (no checks).')
param enableAttendance bool = true

@description('Client e-mail with a calendar invite: grant Mail.Send (see grantEntraMailSend) and set MAIL_SENDER.')
param enableClientEmail bool = false

@description('UPN or object id of the mailbox that sends the client e-mail, usually a shared mailbox (MAIL_SENDER).')
param mailSender string = ''

// RBAC for Applications grants add to Entra grants (Microsoft: "a union operation"), so scoping
// Mail.Send with it (scripts/grant-mail-scope.ps1) needs this false. See app/graph-permissions.bicep.
@description('With enableClientEmail: grant Mail.Send in Entra (tenant-wide unless an application access policy narrows it). False when scoping with RBAC for Applications.')
param grantEntraMailSend bool = true

@description('Grant the Graph app roles in this deployment (needs directory rights, see app/graph-permissions.bicep).')
param grantGraphPermissions bool = true

@description('E-mail for the poison-queue alert; empty: no action group, the alert shows in the portal only.')
param alertEmail string = ''

@description('Upper bound on Flex Consumption instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per Flex Consumption instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Microsoft Graph base URL; change only for national clouds.')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var queueName = 'appointment-events'
var poisonQueueName = 'appointment-events-poison'
var callbackQueueName = 'appointment-callbacks'
var callbackPoisonQueueName = 'appointment-callbacks-poison'
var attendanceQueueName = 'appointment-attendance'
var attendancePoisonQueueName = 'appointment-attendance-poison'
var tableName = 'appointments'
var directoryTableName = 'organizers'
var sourceHealthTableName = 'sourcehealth'
var keyVaultName = '${abbrs.keyVaultVaults}${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    poisonAlertName: '${abbrs.insightsScheduledQueryRules}poison-${resourceToken}'
    poisonQueueName: poisonQueueName
    callbackPoisonAlertName: '${abbrs.insightsScheduledQueryRules}callback-poison-${resourceToken}'
    callbackPoisonQueueName: callbackPoisonQueueName
    attendancePoisonAlertName: '${abbrs.insightsScheduledQueryRules}attendance-poison-${resourceToken}'
    attendancePoisonQueueName: attendancePoisonQueueName
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertEmail: alertEmail
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    queueName: queueName
    poisonQueueName: poisonQueueName
    callbackQueueName: callbackQueueName
    callbackPoisonQueueName: callbackPoisonQueueName
    attendanceQueueName: attendanceQueueName
    attendancePoisonQueueName: attendancePoisonQueueName
    tableName: tableName
    directoryTableName: directoryTableName
    sourceHealthTableName: sourceHealthTableName
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

// Checks `sources` and derives their settings; it deploys nothing, so it fails before anything exists.
module sourceConfig 'app/sources.bicep' = {
  name: 'sources'
  scope: rg
  params: {
    sources: sources
    keyVaultName: keyVaultName
    defaultCallbackUrl: callbackUrl
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    webhookSecrets: webhookSecrets
    sourceNames: sourceConfig.outputs.names
    sourceEntryNames: sourceConfig.outputs.entryNames
    sourceSecrets: empty(sourceSecrets) ? {} : json(sourceSecrets)
    callbackNames: sourceConfig.outputs.callbackNames
    callbackEntryNames: sourceConfig.outputs.callbackEntryNames
    // The named sources' callback secrets, plus the default source's when it has a callback URL.
    callbackSecrets: union(empty(sourceCallbackSecrets) ? {} : json(sourceCallbackSecrets), empty(callbackUrl) ? {} : { appointments: callbackSecrets })
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    keyVaultEntryName: keyVault.outputs.webhookEntryName
    sourceEntryNames: keyVault.outputs.sourceEntryNames
    callbackEntryNames: keyVault.outputs.callbackEntryNames
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    webhookReferenceUri: keyVault.outputs.webhookReferenceUri
    sourceSettings: sourceConfig.outputs.appSettings
    callbackRetrySchedule: callbackRetrySchedule
    retentionDays: retentionDays
    enableClientEmail: enableClientEmail
    mailSender: mailSender
    enableAttendance: enableAttendance
    graphBaseUrl: graphBaseUrl
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The host reads storage and the Key Vault reference as soon as it starts: roles first.
  dependsOn: [
    rbac
  ]
}

module graphPermissions 'app/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    enableSms: enableSms
    enableAttendance: enableAttendance
    enableClientEmail: enableClientEmail
    grantEntraMailSend: grantEntraMailSend
  }
  // Entra replication delay for a new identity (msgraph-bicep-types#193, "Not a valid reference update"): wait for api.
  dependsOn: [
    api
  ]
}

// azd conventions
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.name

// This app
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output WEBHOOK_URL string = api.outputs.webhookUrl
// The identity's client id is also the "app id" the Teams application access policy names.
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output GRAPH_PERMISSIONS_GRANTED bool = grantGraphPermissions
