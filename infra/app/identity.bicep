// The app's single identity: host storage, Key Vault references, App Insights and Microsoft Graph
// all use it. User-assigned so that roles and Graph app roles can be granted before the app exists
// and survive a re-creation of the function app.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
