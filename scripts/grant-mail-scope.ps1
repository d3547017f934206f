#Requires -Version 7.0
<#
.SYNOPSIS
    Limits the function app's Mail.Send to the one mailbox that sends the client e-mail.

.DESCRIPTION
    App-only Mail.Send reaches every mailbox of the tenant unless Exchange Online scopes it. ARM and
    Bicep cannot do that, so this script does, with the ExchangeOnlineManagement module:

    Default, RBAC for Applications (Microsoft's current method; it replaces application access
    policies):
      1. New-ServicePrincipal: Exchange's pointer to the managed identity's Entra service principal
         (-AppId = its client id, -ObjectId = its object id), reused when it exists;
      2. New-ManagementScope with -RecipientRestrictionFilter "PrimarySmtpAddress -eq '<mailbox>'";
      3. New-ManagementRoleAssignment -App ... -Role 'Application Mail.Send' -CustomResourceScope ...;
      4. Test-ServicePrincipalAuthorization against the mailbox (it must say InScope True).

      Microsoft documents these grants as ADDING to the ones in Entra: "the assigned permissions are
      a union operation on the permissions from Microsoft Entra ID and the permissions assigned in
      Exchange Online RBAC", so with a tenant-wide Entra Mail.Send grant the scope has no effect, and
      Test-ServicePrincipalAuthorization does not show that grant. Remove the Entra Mail.Send app role
      assignment and deploy with GRANT_ENTRA_MAIL_SEND=false so `azd provision` does not grant it again
      (docs/deploy.md, "Client e-mail"). The script warns while that variable is not false.
      https://learn.microsoft.com/exchange/permissions-exo/application-rbac ("FAQ", "Testing Authorization")

    -Legacy, an application access policy (Microsoft: "Don't create new App Access Policies"; only
    for tenants that keep them): New-ApplicationAccessPolicy -AccessRight RestrictAccess
    -PolicyScopeGroupId <mail-enabled security group with the mailbox>, then
    Test-ApplicationAccessPolicy. A policy constrains only Entra grants, so this method NEEDS the
    Entra Mail.Send (GRANT_ENTRA_MAIL_SEND=true, the default).

    It is idempotent: an existing pointer, scope, role assignment or policy is reused. Microsoft
    documents a permission cache of 30 minutes to 2 hours for RBAC for Applications (the test cmdlet
    bypasses it) and more than an hour for application access policies: until then Graph may still
    answer 403 (or, before the scope, still allow other mailboxes).

    The signed-in account needs the Exchange role group Organization Management (or the Entra role
    Exchange Administrator).

.PARAMETER AppId
    Client id of the function app's user-assigned identity. Default: $env:AZURE_FUNCTION_IDENTITY_CLIENT_ID.

.PARAMETER ServicePrincipalObjectId
    Object id of that identity's service principal (the Enterprise application's "Object ID", not
    an App registration's). Default: $env:AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID.

.PARAMETER Mailbox
    The sending mailbox: UPN, e-mail address or Entra object id, usually a shared mailbox.
    Default: $env:MAIL_SENDER.

.PARAMETER Legacy
    Scope with an application access policy instead of RBAC for Applications.

.PARAMETER PolicyScopeGroupId
    With -Legacy: the mail-enabled security group (e-mail address or identity) whose members the
    app may send as; put the sending mailbox in it. Default: $env:MAIL_SCOPE_GROUP_ID.

.PARAMETER Name
    Name of the Exchange service principal pointer, the management scope and the role
    assignment. Default: "teams-virtual-appointments-mail".

.PARAMETER SkipConnect
    Use the current Exchange Online session instead of calling Connect-ExchangeOnline.

.EXAMPLE
    ./scripts/grant-mail-scope.ps1 -Mailbox appointments@contoso.com

.EXAMPLE
    ./scripts/grant-mail-scope.ps1 -Mailbox appointments@contoso.com -WhatIf

.EXAMPLE
    ./scripts/grant-mail-scope.ps1 -Mailbox appointments@contoso.com -Legacy -PolicyScopeGroupId appointment-senders@contoso.com
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    [string] $AppId = $env:AZURE_FUNCTION_IDENTITY_CLIENT_ID,
    [string] $ServicePrincipalObjectId = $env:AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID,
    [string] $Mailbox = $env:MAIL_SENDER,
    [switch] $Legacy,
    [string] $PolicyScopeGroupId = $env:MAIL_SCOPE_GROUP_ID,
    [string] $Name = 'teams-virtual-appointments-mail',
    [switch] $SkipConnect
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$role = 'Application Mail.Send'

function Test-Guid([string] $Value) {
    $parsed = [guid]::Empty
    return [guid]::TryParse($Value, [ref] $parsed)
}

if (-not (Test-Guid $AppId)) {
    throw "AppId '$AppId' is not a GUID. Pass -AppId or run after 'azd provision' so AZURE_FUNCTION_IDENTITY_CLIENT_ID is set."
}
if (-not $Mailbox) {
    throw 'No mailbox: pass -Mailbox or set MAIL_SENDER (azd env set MAIL_SENDER ...).'
}
if ($Legacy) {
    if (-not $PolicyScopeGroupId) {
        throw '-Legacy needs -PolicyScopeGroupId (or MAIL_SCOPE_GROUP_ID): a mail-enabled security group that holds the mailbox.'
    }
} elseif (-not (Test-Guid $ServicePrincipalObjectId)) {
    throw "ServicePrincipalObjectId '$ServicePrincipalObjectId' is not a GUID. Pass it or run after 'azd provision' so AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID is set."
}

if (-not (Get-Module -ListAvailable -Name ExchangeOnlineManagement)) {
    Write-Host 'Installing the ExchangeOnlineManagement module for the current user...'
    Install-Module -Name ExchangeOnlineManagement -Scope CurrentUser -Force -AllowClobber
}
Import-Module ExchangeOnlineManagement

if (-not $SkipConnect) {
    Connect-ExchangeOnline -ShowBanner:$false
}

# The mailbox's primary SMTP address: MAIL_SENDER may be an Entra object id.
$found = if (Test-Guid $Mailbox) {
    Get-EXOMailbox -ExternalDirectoryObjectId $Mailbox -ErrorAction SilentlyContinue
} else {
    Get-EXOMailbox -Identity $Mailbox -ErrorAction SilentlyContinue
}
if (-not $found) {
    throw "No mailbox '$Mailbox' in Exchange Online."
}
$address = [string] $found.PrimarySmtpAddress

if ($Legacy) {
    $policy = Get-ApplicationAccessPolicy -ErrorAction SilentlyContinue |
        Where-Object { @($_.AppId) -contains $AppId -and $_.AccessRight -eq 'RestrictAccess' }
    if ($policy) {
        Write-Host "An application access policy already restricts $AppId (scope: $(@($policy.ScopeName) -join ', '))."
    } elseif ($PSCmdlet.ShouldProcess($PolicyScopeGroupId, "Restrict app $AppId to this group")) {
        New-ApplicationAccessPolicy -AppId $AppId -PolicyScopeGroupId $PolicyScopeGroupId -AccessRight RestrictAccess -Description 'Teams virtual appointments: client e-mail sender' | Out-Null
    }
    $result = Test-ApplicationAccessPolicy -Identity $address -AppId $AppId
    if ([string] $result.AccessCheckResult -ne 'Granted') {
        Write-Warning "Test-ApplicationAccessPolicy: $address is '$($result.AccessCheckResult)' for $AppId. Is it a member of $PolicyScopeGroupId?"
    } else {
        Write-Host "Test-ApplicationAccessPolicy: $AppId may send as $address (Entra Mail.Send still required: GRANT_ENTRA_MAIL_SEND=true)."
    }
    Write-Host 'Done. Microsoft documents that policy changes can take longer than 1 hour to reach Graph.'
    return
}

# 1. Exchange's pointer to the Entra service principal.
$pointer = Get-ServicePrincipal -Identity $AppId -ErrorAction SilentlyContinue
if ($pointer) {
    Write-Host "Exchange service principal for $AppId exists ($($pointer.DisplayName))."
    $appIdentity = [string] $pointer.ObjectId
} elseif ($PSCmdlet.ShouldProcess($AppId, 'New-ServicePrincipal')) {
    New-ServicePrincipal -AppId $AppId -ObjectId $ServicePrincipalObjectId -DisplayName $Name | Out-Null
    $appIdentity = $ServicePrincipalObjectId
} else {
    $appIdentity = $ServicePrincipalObjectId
}

# 2. A management scope holding the sending mailbox only.
$filter = "PrimarySmtpAddress -eq '$address'"
$scope = Get-ManagementScope -Identity $Name -ErrorAction SilentlyContinue
if (-not $scope) {
    if ($PSCmdlet.ShouldProcess($Name, "New-ManagementScope ($filter)")) {
        New-ManagementScope -Name $Name -RecipientRestrictionFilter $filter | Out-Null
    }
} elseif ([string] $scope.RecipientFilter -ne $filter) {
    if ($PSCmdlet.ShouldProcess($Name, "Set-ManagementScope ($filter)")) {
        Set-ManagementScope -Identity $Name -RecipientRestrictionFilter $filter
    }
} else {
    Write-Host "Management scope '$Name' already holds $address only."
}

# 3. Application Mail.Send for the app, over that scope.
$assignment = Get-ManagementRoleAssignment -Identity $Name -ErrorAction SilentlyContinue
if (-not $assignment) {
    if ($PSCmdlet.ShouldProcess($Name, "New-ManagementRoleAssignment $role over '$Name'")) {
        New-ManagementRoleAssignment -Name $Name -App $appIdentity -Role 'Application Mail.Send' -CustomResourceScope $Name | Out-Null
    }
} else {
    Write-Host "Role assignment '$Name' exists."
}

# 4. The RBAC check (it leaves out Entra grants and bypasses the permission cache).
if (-not $WhatIfPreference) {
    $check = Test-ServicePrincipalAuthorization -Identity $appIdentity -Resource $address |
        Where-Object { $_.RoleName -eq $role }
    if (-not $check -or -not ($check | Where-Object { $_.InScope -eq $true })) {
        throw "Test-ServicePrincipalAuthorization: '$role' is not in scope for $address."
    }
    Write-Host "Test-ServicePrincipalAuthorization: '$role' is in scope for $address."
}

if ($env:GRANT_ENTRA_MAIL_SEND -ne 'false') {
    Write-Warning ('GRANT_ENTRA_MAIL_SEND is not false: if the identity holds Mail.Send in Entra, it can still send as ANY mailbox ' +
        '(Microsoft: RBAC for Applications grants add to Entra grants). Remove that app role assignment and run ' +
        "'azd env set GRANT_ENTRA_MAIL_SEND false' before the next provision (docs/deploy.md, 'Client e-mail').")
}
Write-Host 'Done. Microsoft documents a permission cache of 30 minutes to 2 hours: until then Graph may answer 403.'
