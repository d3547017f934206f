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

// Where the app POSTs its signed callbacks (SPEC "signed callbacks"): an https URL. Bicep has no
// pattern check: it enforces the length of the shortest https URL (`https://x`), the app the scheme
// (it refuses anything but https, plain http only to localhost).
@minLength(9)
@maxLength(2048)
type callbackUrl = string

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
  callbackUrl: callbackUrl?
}

@description('The named sources; see main.bicep `sources`.')
param sources source[]

@description('Key Vault that holds each source\'s secret (the references below point into it).')
param keyVaultName string

@description('Callback URL of the default source `appointments` (main.bicep `callbackUrl`); empty: none.')
param defaultCallbackUrl string = ''

// The default source's route is WEBHOOK_SECRETS' own; only its callback settings come from here.
var defaultSourceName = 'appointments'

// One Key Vault secret per source.
var entryNames = map(sources, s => 'source-${s.name}-secrets')

// Versionless, as the WEBHOOK_SECRETS reference: the app follows rotations.
var referenceUris = map(entryNames, n => 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/${n}')

// The sources that call back: the named ones with a callbackUrl, then the default source when
// defaultCallbackUrl is set. Each gets a Key Vault secret `source-{name}-callback-secrets`.
var namedCallbacks = map(filter(sources, s => !empty(s.?callbackUrl ?? '')), s => { name: s.name, url: s.?callbackUrl ?? '' })
var defaultCallback = empty(defaultCallbackUrl) ? [] : [{ name: defaultSourceName, url: defaultCallbackUrl }]
var callbackSources = concat(namedCallbacks, defaultCallback)
var callbackEntryNames = map(callbackSources, c => 'source-${c.name}-callback-secrets')
var callbackReferenceUris = map(callbackEntryNames, n => 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/${n}')

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

// SOURCES__{name}__CALLBACKURL in plain text and __CALLBACKSECRETS as a versionless Key Vault
// reference (as __SECRETS), for each source that calls back; nothing for the others.
var callbackSettings = flatten(map(range(0, length(callbackSources)), i => [
  { key: 'SOURCES__${callbackSources[i].name}__CALLBACKURL', value: callbackSources[i].url }
  { key: 'SOURCES__${callbackSources[i].name}__CALLBACKSECRETS', value: '@Microsoft.KeyVault(SecretUri=${callbackReferenceUris[i]})' }
]))

var entries = filter(concat(flatten(sourceSettings), callbackSettings), e => !empty(e.value))

@description('Source names, in the order of entryNames.')
output names array = map(sources, s => s.name)

@description('Key Vault secret name of each source, in the order of names.')
output entryNames array = entryNames

@description('Names of the sources with a callback URL (the default source last, when it has one).')
output callbackNames array = map(callbackSources, c => c.name)

@description('Key Vault secret name of each callback source\'s callback secrets, in the order of callbackNames.')
output callbackEntryNames array = callbackEntryNames

@description('SOURCES__{name}__... app settings of every source (no secret values, only references).')
output appSettings object = toObject(entries, e => e.key, e => e.value)
