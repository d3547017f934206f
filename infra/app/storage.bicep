// Host storage and the app's own state: the deployment package container, the work queue and its
// poison queue, the callback queue and its poison queue, the status table, the organizer directory table and the source health table. Shared keys are off, so every caller (the Functions host,
// the app, the platform's deployment) authenticates with Entra ID.

@description('Storage account name (3-24 lowercase letters and digits).')
param name string

@description('Azure region.')
param location string

@description('Tags for the account.')
param tags object = {}

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Queue the webhook intake writes to and the reconciler reads from.')
param queueName string = 'appointment-events'

@description('Queue the Functions host moves a message to after maxDequeueCount failures.')
param poisonQueueName string = 'appointment-events-poison'

@description('Queue of the signed callbacks to the scheduling systems (SPEC "signed callbacks").')
param callbackQueueName string = 'appointment-callbacks'

@description('Queue a callback is dead-lettered to after its last retry.')
param callbackPoisonQueueName string = 'appointment-callbacks-poison'

@description('Queue of the attendance checks, each hidden until its appointment has ended (SPEC "After the appointment: attendance").')
param attendanceQueueName string = 'appointment-attendance'

@description('Queue the Functions host moves an attendance check to after maxDequeueCount failures.')
param attendancePoisonQueueName string = 'appointment-attendance-poison'

@description('Table that holds one status record per appointment.')
param tableName string = 'appointments'

@description('Table of the organizer directory (shared/settings.py DIRECTORY_TABLE_NAME).')
param directoryTableName string = 'organizers'

@description('Table of each source\'s delivery counts and recent refusals (shared/health.py TABLE_NAME).')
param sourceHealthTableName string = 'sourcehealth'

@description('Replication. ZRS where the region offers it; LRS keeps the template deployable everywhere.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Log Analytics workspace that receives the storage resource logs.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: No VNet here, so Flex Consumption has no fixed egress to allow-list; shared keys and anonymous access are off, every call needs an Entra ID token and a role.
  // checkov:skip=CKV_AZURE_59: Same reason: the public endpoint is reachable but accepts only Entra ID-authenticated callers with a data role.
  // checkov:skip=CKV_AZURE_206: Replication is the skuName parameter (ZRS/GZRS where the region has them); LRS default keeps every Flex region deployable.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    supportsHttpsTrafficOnly: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource workQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: queueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: poisonQueueName
}

resource callbackQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: callbackQueueName
}

// Declared like poisonQueue, so it exists (and can be watched) before the first dead letter.
resource callbackPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: callbackPoisonQueueName
}

// A check waits in the queue until its appointment has ended (re-hiding itself up to 7 days at a
// time, never expiring), so the queue holds about one message per future appointment.
resource attendanceQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: attendanceQueueName
}

resource attendancePoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: attendancePoisonQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource statusTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: tableName
}

// The app also creates it when missing; provisioned here so it exists before the first request.
resource directoryTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: directoryTableName
}

// The app also creates it when missing (GET /api/sources/{source} reads it).
resource sourceHealthTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: sourceHealthTableName
}

// Read, write and delete logs of the queue service (who touched the appointment queues).
resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'queue-to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
output queueName string = workQueue.name
output poisonQueueName string = poisonQueue.name
output callbackQueueName string = callbackQueue.name
output callbackPoisonQueueName string = callbackPoisonQueue.name
output attendanceQueueName string = attendanceQueue.name
output attendancePoisonQueueName string = attendancePoisonQueue.name
output tableName string = statusTable.name
output directoryTableName string = directoryTable.name
output sourceHealthTableName string = sourceHealthTable.name
