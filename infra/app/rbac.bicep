// Data-plane roles for the app's user-assigned identity, and nothing else: no Owner, no
// Contributor, no key-based access. Each assignment is scoped to the narrowest resource that works.

@description('Principal (object) id of the function app\'s user-assigned identity.')
param principalId string

@description('Storage account used by the Functions host and the app.')
param storageAccountName string

@description('Application Insights component the app sends telemetry to.')
param applicationInsightsName string

@description('Key Vault that holds the webhook secrets.')
param keyVaultName string

@description('Name of the Key Vault secret the app reads through its Key Vault reference.')
param keyVaultEntryName string

@description('Key Vault secret names of the named sources (SOURCES__{name}__SECRETS).')
param sourceEntryNames array = []

@description('Key Vault secret names of the callback signing secrets (SOURCES__{name}__CALLBACKSECRETS).')
param callbackEntryNames array = []

// Built-in role definition ids (stable across tenants).
// Storage Blob Data Owner: host leases, keys and the deployment package container.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Storage Queue Data Contributor: enqueue, dequeue, poison-queue moves.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// Storage Table Data Contributor: the appointments status table.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Monitoring Metrics Publisher: Entra ID-authenticated telemetry (App Insights local auth is off).
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
// Key Vault Secrets User: read secret values, here only the webhook, source and callback secrets.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource webhookEntry 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: keyVaultEntryName
}

resource sourceEntries 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for entryName in sourceEntryNames: {
  parent: vault
  name: entryName
}]

resource callbackEntries 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for entryName in callbackEntryNames: {
  parent: vault
  name: entryName
}]

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Scoped to the one secret, not the vault: the identity cannot list or read anything else.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(webhookEntry.id, principalId, keyVaultSecretsUser)
  scope: webhookEntry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// One per source, each scoped to that source's secret as above.
resource sourceSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (entryName, i) in sourceEntryNames: {
  name: guid(sourceEntries[i].id, principalId, keyVaultSecretsUser)
  scope: sourceEntries[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

// One per callback source, each scoped to that source's callback secret.
resource callbackSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (entryName, i) in callbackEntryNames: {
  name: guid(callbackEntries[i].id, principalId, keyVaultSecretsUser)
  scope: callbackEntries[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]
