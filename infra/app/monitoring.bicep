// Logs, telemetry and the one alert that matters operationally: appointments that gave up.

@description('Log Analytics workspace name.')
param logAnalyticsName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object = {}

@description('Days of log retention in the workspace.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Name of the alert rule on poisoned appointment messages.')
param poisonAlertName string

@description('Queue the Functions host moves a message to after maxDequeueCount failures.')
param poisonQueueName string

@description('Name of the alert rule on dead-lettered callbacks.')
param callbackPoisonAlertName string

@description('Queue the app moves a callback to once its retry schedule ran out.')
param callbackPoisonQueueName string

@description('Name of the alert rule on poisoned attendance checks.')
param attendancePoisonAlertName string

@description('Queue an attendance check lands in after maxDequeueCount failures, or at once when unreadable.')
param attendancePoisonQueueName string

@description('Action group name, used only when alertEmail is set.')
param actionGroupName string

@description('E-mail address that receives the alert. Empty: the alert fires in the portal only.')
param alertEmail string = ''

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    IngestionMode: 'LogAnalytics'
    // Telemetry is accepted only with an Entra ID token (the app's identity holds
    // Monitoring Metrics Publisher); the instrumentation key alone is not enough.
    DisableLocalAuth: true
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'appt-alerts'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Why a log search alert and not a metric alert on the poison queue:
// the storage metric QueueMessageCount is emitted per account (no per-queue dimension) and only
// about once an hour, so it cannot tell the poison queue from the work queue. The Functions host
// logs a warning "Message has reached MaxDequeueCount of N. Moving message to queue '<name>'" each
// time it poisons a message; counting those traces alerts within one evaluation period, per
// poisoned appointment. host.json keeps traces at Information, so the warning is collected.
// Caveat: App Insights adaptive sampling may drop traces under heavy load (over roughly 5 items/s);
// the status records stay the source of truth (`failed`) and POST .../reconcile replays them.
resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: poisonAlertName
  location: location
  tags: tags
  properties: {
    displayName: 'Appointments moved to ${poisonQueueName}'
    description: 'A reconciliation failed maxDequeueCount times and its message went to the poison queue. The status record shows failed; fix the cause, then POST /api/appointments/{id}/reconcile.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where message has "MaxDequeueCount" and message has "${poisonQueueName}"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}

// The app itself dead-letters a callback (CallbackDelivery) and logs one warning naming the
// queue when it does: the same trace-count alert as above, on that line.
resource callbackPoisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: callbackPoisonAlertName
  location: location
  tags: tags
  properties: {
    displayName: 'Callbacks moved to ${callbackPoisonQueueName}'
    description: 'A callback failed through its whole retry schedule. The record\'s callback.status is failed with lastStatusCode; fix the receiver, then POST /api/appointments/{id}/callback.'
    severity: 3
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where message has "failed after" and message has "${callbackPoisonQueueName}"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}

// An attendance check parked by the host (storage kept failing through maxDequeueCount) or by
// the app (a message it cannot read, logged "malformed attendance message ..."): the record
// stays without attendance until an operator replays it, which schedules the check again.
resource attendancePoisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: attendancePoisonAlertName
  location: location
  tags: tags
  properties: {
    displayName: 'Attendance checks moved to ${attendancePoisonQueueName}'
    description: 'An attendance check could not run. Once storage is healthy, POST /api/appointments/{id}/reconcile (or the bulk replay) schedules it again; a check that already ran reads nothing twice.'
    severity: 3
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where (message has "MaxDequeueCount" and message has "${attendancePoisonQueueName}") or message has "malformed attendance message"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}

output logAnalyticsId string = logAnalytics.id
output logAnalyticsName string = logAnalytics.name
output applicationInsightsId string = appInsights.id
output applicationInsightsName string = appInsights.name
output poisonAlertId string = poisonAlert.id
