#Requires -Version 7.0
<#
.SYNOPSIS
    Lets the function app's managed identity act on Teams online meetings of chosen organizers.

.DESCRIPTION
    Every app-only call under /users/{id}/onlineMeetings needs a Teams application access policy
    that names the app and is granted to the organizer. ARM and Bicep cannot create one, so this
    script does it with the MicrosoftTeams PowerShell module:

      1. New-CsApplicationAccessPolicy for the app id (the managed identity's client id), or reuse
         the policy if it exists (adding the app id when it is missing);
      2. Grant-CsApplicationAccessPolicy to a group, a list of users, and/or the whole tenant.

    It is idempotent: run it again with the same arguments and nothing changes. A user or group
    that already has a different application access policy is left alone (a user can hold only
    one, and replacing it would cut off another app) unless -Force is given.

    A grant can take up to 30 minutes to apply. Until then Graph answers 403 "No Application
    Access Policy found for this app"; replay affected appointments afterwards with
    POST /api/appointments/{id}/reconcile.

    Run by the azd postprovision hook when GRANT_ACCESS_POLICY=true; every parameter defaults to
    an azd environment value, so `azd env set` is all the hook needs. The signed-in account needs
    the Teams Administrator role.

.PARAMETER AppId
    Client id of the function app's user-assigned identity. Default: $env:AZURE_FUNCTION_IDENTITY_CLIENT_ID
    (an output of infra/main.bicep).

.PARAMETER PolicyName
    Name of the policy. Default: $env:ACCESS_POLICY_NAME, else "teams-virtual-appointments".

.PARAMETER GroupId
    Entra group (object id or e-mail address) whose members may organize appointments.
    Default: $env:ACCESS_POLICY_GROUP_ID.

.PARAMETER Users
    Organizers (object ids or user principal names). Default: $env:ACCESS_POLICY_USERS, split on
    commas, semicolons or spaces.

.PARAMETER Global
    Grant to every user of the tenant. Default: $env:ACCESS_POLICY_GLOBAL -eq 'true'.

.PARAMETER GroupRank
    Rank of the group policy assignment (1 is the highest priority). Default: 1.

.PARAMETER TenantId
    Tenant to sign in to. Default: $env:AZURE_TENANT_ID.

.PARAMETER Remove
    Undo: revoke the grants made to the given targets, take the app id out of the policy and
    delete the policy when no app is left in it. Use after `azd down`. A grant is revoked only
    where it is this policy; with -Global the tenant-wide policy is reset only when its app ids
    are this policy's (another app's global grant is left alone, with a warning).

.PARAMETER Force
    Replace a different application access policy already granted to a target user or group.

.PARAMETER SkipConnect
    Use the current MicrosoftTeams session instead of calling Connect-MicrosoftTeams.

.EXAMPLE
    ./scripts/grant-access-policy.ps1 -GroupId 5f0c...e1 -WhatIf

.EXAMPLE
    ./scripts/grant-access-policy.ps1 -Users alice@contoso.com,bob@contoso.com

.EXAMPLE
    ./scripts/grant-access-policy.ps1 -Global

.EXAMPLE
    ./scripts/grant-access-policy.ps1 -GroupId 5f0c...e1 -Remove
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    [string] $AppId = $env:AZURE_FUNCTION_IDENTITY_CLIENT_ID,
    [string] $PolicyName = $(if ($env:ACCESS_POLICY_NAME) { $env:ACCESS_POLICY_NAME } else { 'teams-virtual-appointments' }),
    [string] $GroupId = $env:ACCESS_POLICY_GROUP_ID,
    [string[]] $Users = $(if ($env:ACCESS_POLICY_USERS) { $env:ACCESS_POLICY_USERS -split '[,;\s]+' | Where-Object { $_ } } else { @() }),
    [switch] $Global = ($env:ACCESS_POLICY_GLOBAL -eq 'true'),
    [ValidateRange(1, 100000)]
    [int] $GroupRank = 1,
    [string] $TenantId = $env:AZURE_TENANT_ID,
    [switch] $Remove,
    [switch] $Force,
    [switch] $SkipConnect
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Test-Guid([string] $Value) {
    $parsed = [guid]::Empty
    return [guid]::TryParse($Value, [ref] $parsed)
}

if (-not (Test-Guid $AppId)) {
    throw "AppId '$AppId' is not a GUID. Pass -AppId or run after 'azd provision' so AZURE_FUNCTION_IDENTITY_CLIENT_ID is set."
}
if (-not $GroupId -and $Users.Count -eq 0 -and -not $Global) {
    throw 'Nothing to grant: pass -GroupId, -Users or -Global (or set ACCESS_POLICY_GROUP_ID, ACCESS_POLICY_USERS or ACCESS_POLICY_GLOBAL=true).'
}

if (-not (Get-Module -ListAvailable -Name MicrosoftTeams)) {
    Write-Host 'Installing the MicrosoftTeams module for the current user...'
    Install-Module -Name MicrosoftTeams -Scope CurrentUser -Force -AllowClobber
}
Import-Module MicrosoftTeams

if (-not $SkipConnect) {
    if ($TenantId) { Connect-MicrosoftTeams -TenantId $TenantId | Out-Null } else { Connect-MicrosoftTeams | Out-Null }
}

# Effective application access policy name of a user; '' when none.
function Get-UserPolicy([string] $User) {
    $property = (Get-CsOnlineUser -Identity $User).PSObject.Properties['ApplicationAccessPolicy']
    if (-not $property -or -not $property.Value) { return '' }
    # Older module versions return the name, newer ones an object with a Name.
    if ($property.Value -is [string]) { return $property.Value }
    return [string] $property.Value.Name
}

# Policy name directly assigned to a group for this policy type; '' when none.
function Get-GroupPolicy([string] $Group) {
    $found = Get-CsGroupPolicyAssignment -GroupId $Group -PolicyType ApplicationAccessPolicy -ErrorAction SilentlyContinue
    if ($found) { return [string] $found.PolicyName }
    return ''
}

# App ids of the tenant-wide (Global) application access policy instance; empty when none.
function Get-GlobalAppIds {
    $found = Get-CsApplicationAccessPolicy -Identity Global -ErrorAction SilentlyContinue
    if ($found -and $found.AppIds) { return @($found.AppIds) }
    return @()
}

$policy = Get-CsApplicationAccessPolicy -Identity $PolicyName -ErrorAction SilentlyContinue

if ($Remove) {
    foreach ($user in $Users) {
        if ((Get-UserPolicy $user) -eq $PolicyName -and $PSCmdlet.ShouldProcess($user, "Revoke $PolicyName")) {
            Grant-CsApplicationAccessPolicy -Identity $user -PolicyName $null
        }
    }
    if ($GroupId -and (Get-GroupPolicy $GroupId) -eq $PolicyName -and $PSCmdlet.ShouldProcess($GroupId, "Remove group assignment of $PolicyName")) {
        Remove-CsGroupPolicyAssignment -GroupId $GroupId -PolicyType ApplicationAccessPolicy
    }
    if ($Global) {
        # Reset the tenant-wide instance only when it is this policy: same app ids, ours among
        # them. Anything else is another app's grant, and resetting it would cut that app off.
        $globalAppIds = @(Get-GlobalAppIds)
        $ourAppIds = if ($policy) { @($policy.AppIds) } else { @($AppId) }
        $isOurs = ($globalAppIds -contains $AppId) -and -not (Compare-Object $globalAppIds $ourAppIds)
        if (-not $isOurs) {
            $apps = if ($globalAppIds.Count) { $globalAppIds -join ', ' } else { 'none' }
            Write-Warning "The global application access policy is not '$PolicyName' (its apps: $apps); left unchanged. If it is yours to reset: Grant-CsApplicationAccessPolicy -Global -PolicyName `$null"
        } elseif ($PSCmdlet.ShouldProcess('tenant', "Revoke global $PolicyName")) {
            Grant-CsApplicationAccessPolicy -Global -PolicyName $null
        }
    }
    if ($policy) {
        $remaining = @($policy.AppIds | Where-Object { $_ -ne $AppId })
        if ($remaining.Count -eq 0) {
            if ($PSCmdlet.ShouldProcess($PolicyName, 'Delete policy')) {
                Remove-CsApplicationAccessPolicy -Identity $PolicyName
            }
        } elseif ($remaining.Count -lt @($policy.AppIds).Count -and $PSCmdlet.ShouldProcess($PolicyName, "Remove app $AppId")) {
            Set-CsApplicationAccessPolicy -Identity $PolicyName -AppIds @{ Remove = $AppId }
        }
    }
    Write-Host "Removed $AppId from '$PolicyName'. Changes can take up to 30 minutes to apply."
    return
}

if (-not $policy) {
    if ($PSCmdlet.ShouldProcess($PolicyName, "Create policy for app $AppId")) {
        New-CsApplicationAccessPolicy -Identity $PolicyName -AppIds $AppId -Description 'Teams virtual appointments function app (managed identity)' | Out-Null
    }
} elseif (@($policy.AppIds) -notcontains $AppId) {
    if ($PSCmdlet.ShouldProcess($PolicyName, "Add app $AppId")) {
        Set-CsApplicationAccessPolicy -Identity $PolicyName -AppIds @{ Add = $AppId }
    }
} else {
    Write-Host "Policy '$PolicyName' already lists $AppId."
}

foreach ($user in $Users) {
    $current = Get-UserPolicy $user
    if ($current -eq $PolicyName) {
        Write-Host "$user already has '$PolicyName'."
    } elseif ($current -and -not $Force) {
        Write-Warning "$user has policy '$current'; left unchanged (a user holds one policy). Add $AppId to '$current' with Set-CsApplicationAccessPolicy, or rerun with -Force to replace it."
    } elseif ($PSCmdlet.ShouldProcess($user, "Grant $PolicyName")) {
        Grant-CsApplicationAccessPolicy -Identity $user -PolicyName $PolicyName
    }
}

if ($GroupId) {
    $current = Get-GroupPolicy $GroupId
    if ($current -eq $PolicyName) {
        Write-Host "Group $GroupId already has '$PolicyName'."
    } elseif ($current -and -not $Force) {
        Write-Warning "Group $GroupId has policy '$current'; left unchanged. Rerun with -Force to replace it."
    } elseif ($PSCmdlet.ShouldProcess($GroupId, "Grant $PolicyName (rank $GroupRank)")) {
        Grant-CsApplicationAccessPolicy -Group $GroupId -PolicyName $PolicyName -Rank $GroupRank
    }
}

if ($Global) {
    # Granting is idempotent; the global instance applies to users without a policy of their own.
    if ($PSCmdlet.ShouldProcess('tenant', "Grant $PolicyName globally")) {
        Grant-CsApplicationAccessPolicy -Global -PolicyName $PolicyName
    }
}

Write-Host "Done. A grant can take up to 30 minutes to apply; until then Graph answers 403 for the affected organizers."
