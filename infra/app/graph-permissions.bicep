// Microsoft Graph application permissions (app roles) for the function app's managed identity.
//
// Its own module because it uses the Microsoft Graph Bicep extension (alias in ../bicepconfig.json):
// the tenant-level resources below are created through Graph, not ARM, so the DEPLOYING principal
// needs directory rights on top of its Azure rights, either
//   - the Graph application permissions AppRoleAssignment.ReadWrite.All and Application.Read.All
//     (a CI service principal), or
//   - the Entra role Privileged Role Administrator (or Global Administrator) for a person.
// Without them set GRANT_GRAPH_PERMISSIONS=false and let an administrator deploy once with them.
extension microsoftGraphV1

@description('Principal (object) id of the managed identity that receives the app roles.')
param principalId string

@description('Also grant VirtualAppointmentNotification.Send (SMS); needs Teams Premium.')
param enableSms bool = false

// Reading attendance after each appointment (SPEC "After the appointment: attendance"): the app
// schedules a check after every meeting's end, so the role is granted by default; false grants
// nothing (and main.bicep switches the checks off). The role only reads reports of meetings whose
// organizer has the Teams access policy.
@description('Also grant OnlineMeetingArtifact.Read.All (attendance reports after each appointment).')
param enableAttendance bool = true

@description('Client e-mail (MAIL_SENDER): also grant Mail.Send, unless grantEntraMailSend is false.')
param enableClientEmail bool = false

// Mail.Send granted here is tenant-wide: the app could send as any mailbox. An application access
// policy (scripts/grant-mail-scope.ps1 -Legacy) narrows such an Entra grant. RBAC for Applications
// (the script's default) does not: Microsoft documents its grants as additive to the Entra ones ("a
// union operation"), so with it this grant must not exist and grantEntraMailSend is false.
// https://learn.microsoft.com/exchange/permissions-exo/application-rbac (FAQ)
@description('With enableClientEmail: grant Mail.Send in Entra (needed by -Legacy). False when scoping with RBAC for Applications.')
param grantEntraMailSend bool = true

// Microsoft Graph's well-known application id, the same in every tenant.
var graphAppId = '00000003-0000-0000-c000-000000000000'

resource graphSp 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// Role ids are looked up by their value in Graph's own appRoles, never pasted.

// createOrGet, PATCH and DELETE of onlineMeetings under /users/{id}.
resource onlineMeetings 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: principalId
  resourceId: graphSp.id
  appRoleId: filter(graphSp.appRoles, role => role.value == 'OnlineMeetings.ReadWrite.All')[0].id
}

// getVirtualAppointmentJoinWebUrl (the clients' browser join link with the waiting room).
resource virtualAppointment 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: principalId
  resourceId: graphSp.id
  appRoleId: filter(graphSp.appRoles, role => role.value == 'VirtualAppointment.ReadWrite.All')[0].id
}

// Resolving an organizer's user principal name to the object id (GET /users/{upn}?$select=id):
// the basic profile is enough, so not User.Read.All (least privilege).
resource userRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: principalId
  resourceId: graphSp.id
  appRoleId: filter(graphSp.appRoles, role => role.value == 'User.ReadBasic.All')[0].id
}

// sendVirtualAppointmentSms and the reminder SMS; only with Teams Premium, so opt-in.
resource smsSend 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (enableSms) {
  principalId: principalId
  resourceId: graphSp.id
  appRoleId: filter(graphSp.appRoles, role => role.value == 'VirtualAppointmentNotification.Send')[0].id
}

// GET .../onlineMeetings/{id}/attendanceReports and each report's attendanceRecords (who joined,
// for how long); the same Teams application access policy applies. Role id
// df01ed3b-eb61-4eca-9965-6b3d789751b2, looked up by value like the others.
resource attendanceRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (enableAttendance) {
  principalId: principalId
  resourceId: graphSp.id
  appRoleId: filter(graphSp.appRoles, role => role.value == 'OnlineMeetingArtifact.Read.All')[0].id
}

// POST /users/{MAIL_SENDER}/sendMail (client e-mail with the calendar invite); opt-in.
resource mailSend 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (enableClientEmail && grantEntraMailSend) {
  principalId: principalId
  resourceId: graphSp.id
  appRoleId: filter(graphSp.appRoles, role => role.value == 'Mail.Send')[0].id
}

output graphServicePrincipalId string = graphSp.id
var baseRoles = [
  'OnlineMeetings.ReadWrite.All'
  'VirtualAppointment.ReadWrite.All'
  'User.ReadBasic.All'
]
var smsRoles = enableSms ? ['VirtualAppointmentNotification.Send'] : []
var mailRoles = (enableClientEmail && grantEntraMailSend) ? ['Mail.Send'] : []
var attendanceRoles = enableAttendance ? ['OnlineMeetingArtifact.Read.All'] : []
output grantedAppRoles array = concat(baseRoles, smsRoles, mailRoles, attendanceRoles)
