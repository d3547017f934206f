// The function app on the Flex Consumption plan (FC1, Linux, Python 3.11). Every connection is
// identity-based through one user-assigned identity: host storage, the deployment package, App
// Insights, the Key Vault references for WEBHOOK_SECRETS and the sources' secrets and, in the app's
// code, Microsoft Graph.

@description('Function app name; also the host name prefix.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags; the app also gets azd-service-name so `azd deploy` finds it.')
param tags object = {}

@description('azd service name from azure.yaml.')
param serviceName string = 'api'

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Storage account for the host, the queues, the table and the deployment package.')
param storageAccountName string

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Versionless URI of the Key Vault secret that holds the webhook HMAC secrets.')
param webhookReferenceUri string

@description('SOURCES__{name}__... settings of the named sources (app/sources.bicep builds them).')
param sourceSettings object = {}

@description('Comma-separated callback retry delays in seconds (CALLBACK_RETRY_SCHEDULE); empty: the app default.')
param callbackRetrySchedule string = ''

@description('Days after an appointment ends (or is cancelled) until its clients\' names, e-mail addresses and phone numbers are erased (RETENTION_DAYS); 0 keeps them.')
@minValue(0)
@maxValue(36500)
param retentionDays int = 30

@description('Send client e-mail: with mailSender set, writes MAIL_SENDER.')
param enableClientEmail bool = false

@description('UPN or object id of the mailbox the client e-mail is sent from (MAIL_SENDER).')
param mailSender string = ''

@description('Attendance checks after each appointment (needs OnlineMeetingArtifact.Read.All); false writes ATTENDANCE_ENABLED=false.')
param enableAttendance bool = true

@description('Microsoft Graph base URL (national clouds use another host).')
param graphBaseUrl string

@description('Upper bound on instances; caps cost and the load on Graph.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory per instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

// Optional settings, written only when set so that the app's defaults apply otherwise:
// CALLBACK_RETRY_SCHEDULE (default 5,300,1800,7200,18000,36000,36000), MAIL_SENDER (unset: no
// client e-mail is sent, and the app warns why) and ATTENDANCE_ENABLED (default true: written
// only to switch the checks off where the attendance role is not granted, so the app never
// schedules a check that Graph would refuse with 403).
var retrySetting = empty(callbackRetrySchedule) ? {} : { CALLBACK_RETRY_SCHEDULE: callbackRetrySchedule }
var mailSetting = (enableClientEmail && !empty(mailSender)) ? { MAIL_SENDER: mailSender } : {}
var attendanceSetting = enableAttendance ? {} : { ATTENDANCE_ENABLED: 'false' }
var optionalSettings = union(retrySetting, mailSetting, attendanceSetting)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions and needs ZRS storage; left to the operator.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: The scheduling system calls the webhook over the internet; requests need a function key and an HMAC signature.
  // checkov:skip=CKV_AZURE_17: Webhook senders authenticate with HMAC signatures and function keys; scheduling systems rarely support client certificates.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales out on demand and to zero; there is no fixed instance count to set.
  // checkov:skip=CKV_AZURE_213: App Service health check is not available on Flex Consumption; GET /api/health serves external probes.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    // Key Vault references resolve with the user-assigned identity, not a system-assigned one.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // Checkov reads every sites/config resource as siteConfig; these are false positives on 'appsettings'.
  // checkov:skip=CKV_AZURE_13: False positive: this resource holds app settings; auth is function keys plus HMAC signatures (see docs/deploy.md).
  // checkov:skip=CKV_AZURE_63: False positive: HTTP logging is a siteConfig property, not an app setting; requests go to App Insights.
  // checkov:skip=CKV_AZURE_65: False positive: detailed error pages are a siteConfig property and stay off by default.
  // checkov:skip=CKV_AZURE_66: False positive: failed request tracing is a siteConfig property; failures go to App Insights.
  // checkov:skip=CKV_AZURE_80: False positive: no .NET Framework here, the runtime is Python 3.11.
  // checkov:skip=CKV_AZURE_88: False positive: Flex Consumption uses blob storage for the package and has no Azure Files content share.
  // checkov:skip=CKV_AZURE_222: False positive: public network access is set on the site (see the skip there).
  parent: functionApp
  name: 'appsettings'
  // The named sources' settings (their names all start SOURCES__) and the optional ones are added.
  properties: union({
    // Identity-based host storage: no AccountKey, no connection string anywhere.
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    // ManagedIdentityCredential in the app picks the user-assigned identity by this client id.
    AZURE_CLIENT_ID: identityClientId
    WEBHOOK_SECRETS: '@Microsoft.KeyVault(SecretUri=${webhookReferenceUri})'
    GRAPH_BASE_URL: graphBaseUrl
    RETENTION_DAYS: string(retentionDays)
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    // Sync functions hold one worker thread per invocation (default pool: CPUs + 4). Each of
    // the 2 queue triggers keeps batchSize + newBatchThreshold = 24 in flight (host.json), so a
    // dead callback receiver cannot take the reconciler's; plus 8 for HTTP: 56. A test in
    // tests/infra derives it (checkov's parser fails on comment blocks of 5+ lines here).
    PYTHON_THREADPOOL_THREAD_COUNT: '56'
  }, sourceSettings, optionalSettings)
}

// Basic-auth publishing (FTP and SCM user/password) off: azd deploys with an Entra ID token.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
output webhookUrl string = 'https://${functionApp.properties.defaultHostName}/api/webhooks/appointments'
