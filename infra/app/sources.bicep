// Named sources (SPEC "Sources"): validates the `sources` parameter and turns it into the
// SOURCES__{name}__... app settings and the names of their Key Vault secrets. It deploys no
// resource: it is a function over its parameters, so it runs before anything is created and a
// wrong kind or an over-long name fails the deployment first.
// It uses user-defined types and lambdas, which checkov's parser cannot read: check-infra.sh skips
// it (there is no resource to scan) and tests/infra checks it with the newer parser.

// The route kinds the app knows (shared/settings.py KINDS).
type sourceKind = 'native' | 'hl7v2' | 'calendly' | 'calcom'

// 1-32 of a-z0-9, and not `appointments` (reserved for the default source). Bicep has no pattern
// check: the length is enforced here, the characters by the app (it rejects other names).
@minLength(1)
@maxLength(32)
type sourceName = string

// ISO 3166-1 alpha-2, e.g. US.
@minLength(2)
@maxLength(2)
type phoneRegion = string

@minLength(1)
@maxLength(255)
type subject = string

// Optional fields left out are left out of the app settings too: the app's defaults apply
// (TIMEZONE UTC, PHONEREGION US, SUBJECT "Virtual appointment", the switches false).
type source = {
  name: sourceName
  kind: sourceKind
  timeZone: string?
  phoneRegion: phoneRegion?
  subject: subject?
  sendSms: bool?
  sendEmail: bool?
  sendSmsReminder: bool?
  // Callbacks (SPEC "signed callbacks") will add callbackUrl here; see `callbackSettings` below.
}

@description('The named sources; see main.bicep `sources`.')
param sources source[]

@description('Key Vault that holds each source\'s secret (the references below point into it).')
param keyVaultName string

// One Key Vault secret per source; callback secrets will take `source-{name}-callback-secrets`.
var entryNames = map(sources, s => 'source-${s.name}-secrets')

// Versionless, as the WEBHOOK_SECRETS reference: the app follows rotations.
var referenceUris = map(entryNames, n => 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/${n}')

var sourceSettings = map(range(0, length(sources)), i => [
  { key: 'SOURCES__${sources[i].name}__KIND', value: sources[i].kind }
  { key: 'SOURCES__${sources[i].name}__SECRETS', value: '@Microsoft.KeyVault(SecretUri=${referenceUris[i]})' }
  { key: 'SOURCES__${sources[i].name}__TIMEZONE', value: sources[i].?timeZone ?? '' }
  { key: 'SOURCES__${sources[i].name}__PHONEREGION', value: sources[i].?phoneRegion ?? '' }
  { key: 'SOURCES__${sources[i].name}__SUBJECT', value: sources[i].?subject ?? '' }
  { key: 'SOURCES__${sources[i].name}__SENDSMS', value: string(sources[i].?sendSms ?? false) }
  { key: 'SOURCES__${sources[i].name}__SENDEMAIL', value: string(sources[i].?sendEmail ?? false) }
  { key: 'SOURCES__${sources[i].name}__SENDSMSREMINDER', value: string(sources[i].?sendSmsReminder ?? false) }
])

// Hook for callbacks: the SOURCES__{name}__CALLBACKURL and __CALLBACKSECRETS entries (the latter a
// Key Vault reference, as __SECRETS) join this list. Empty until callbacks exist.
var callbackSettings = []

var entries = filter(concat(flatten(sourceSettings), callbackSettings), e => !empty(e.value))

@description('Source names, in the order of entryNames.')
output names array = map(sources, s => s.name)

@description('Key Vault secret name of each source, in the order of names.')
output entryNames array = entryNames

@description('SOURCES__{name}__... app settings of every source (no secret values, only references).')
output appSettings object = toObject(entries, e => e.key, e => e.value)
