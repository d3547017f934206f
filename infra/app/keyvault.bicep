// The webhook HMAC secrets, each named source's secrets and the callback signing secrets live here, not in app settings: the
// function app reads them through Key Vault references with its user-assigned identity, which
// holds Key Vault Secrets User on these secrets only (see rbac.bicep).

@description('Key Vault name (3-24 characters).')
param name string

@description('Azure region.')
param location string

@description('Tags for the vault.')
param tags object = {}

@description('Comma-separated HMAC secrets the scheduling system signs webhooks with.')
@secure()
param webhookSecrets string

@description('Named sources, in the order of sourceEntryNames (app/sources.bicep outputs both).')
param sourceNames array = []

@description('Key Vault secret name of each source, in the order of sourceNames.')
param sourceEntryNames array = []

@description('Comma-separated secrets of each source, by source name; every source needs an entry.')
@secure()
param sourceSecrets object

@description('Sources that call back (app/sources.bicep callbackNames), in the order of callbackEntryNames.')
param callbackNames array = []

@description('Key Vault secret name of each callback source\'s signing secrets, in the order of callbackNames.')
param callbackEntryNames array = []

@description('Comma-separated whsec_ callback signing secrets, by source name; every callback source needs an entry.')
@secure()
param callbackSecrets object = {}

@description('Days a deleted vault or secret stays recoverable (7-90). Purge protection keeps it that long.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 7

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: No VNet here, so Key Vault references from Flex Consumption come from shared platform egress; access is RBAC-only, one role on one secret.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109: public endpoint, Entra ID + RBAC only.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Azure RBAC only: no access policies, so a role assignment is the one way in.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Holds the app setting WEBHOOK_SECRETS.
resource webhookSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: Rotation is a documented procedure (docs/deploy.md); an expiry would make every webhook fail closed with 503.
  parent: vault
  name: 'webhook-secrets'
  properties: {
    value: webhookSecrets
    contentType: 'text/plain; comma-separated HMAC secrets'
    attributes: {
      enabled: true
    }
  }
}

// Holds SOURCES__{name}__SECRETS of each named source.
resource sourceSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for (sourceName, i) in sourceNames: {
  // checkov:skip=CKV_AZURE_41: Same as webhook-secrets: rotation is documented; an expiry would fail the source closed.
  parent: vault
  name: sourceEntryNames[i]
  properties: {
    value: sourceSecrets[sourceName]
    contentType: 'text/plain; comma-separated secrets'
    attributes: {
      enabled: true
    }
  }
}]

// Holds SOURCES__{name}__CALLBACKSECRETS of each source with a callback URL (the default source's too).
resource callbackSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for (sourceName, i) in callbackNames: {
  // checkov:skip=CKV_AZURE_41: Same as webhook-secrets: rotation is documented (two secrets sign every callback); an expiry would stop the callbacks.
  parent: vault
  name: callbackEntryNames[i]
  properties: {
    value: callbackSecrets[sourceName]
    contentType: 'text/plain; comma-separated whsec_ signing secrets'
    attributes: {
      enabled: true
    }
  }
}]

output id string = vault.id
output name string = vault.name
output vaultUri string = vault.properties.vaultUri
output webhookEntryName string = webhookSecret.name
// Versionless URI: a Key Vault reference to it follows rotations (see docs/deploy.md).
output webhookReferenceUri string = webhookSecret.properties.secretUri
// The secrets rbac.bicep grants access to (deployed, so the grants wait for them).
output sourceEntryNames array = [for (sourceName, i) in sourceNames: sourceSecret[i].name]
// The callback secrets rbac.bicep grants access to (deployed, so the grants wait for them).
output callbackEntryNames array = [for (sourceName, i) in callbackNames: callbackSecret[i].name]
