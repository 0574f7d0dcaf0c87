"""The offline assessment: recognises common MSP problem areas in a case by rules, no network."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from webapp.integrations.ai.base import Assessment, AssessmentProvider

MODEL = "rules-v1"

# Huge cases are cut before matching: the head of each field and the most
# recent messages carry the signal, and the work stays bounded.
MAX_FIELD_CHARS = 8_000
MAX_MESSAGE_CHARS = 4_000
MAX_TRANSCRIPT_CHARS = 48_000

# An area needs at least this score to be named; weaker ones are noise.
MIN_AREA_SCORE = 3.0
MAX_AREAS = 3
MIN_CAUSES = 3
MAX_CAUSES = 5
# Steps for less likely causes are added up to this many; generic triage fills up to MIN_STEPS.
FULL_PLAN_STEPS = 4
MIN_STEPS = 3
MAX_STEPS = 8
# How many steps each ranked area contributes: the likeliest area gets a full plan.
STEPS_PER_AREA = (6, 2, 1)
# Assistant messages often speculate, so what they mention counts for less.
ASSISTANT_WEIGHT = 0.5


def _rx(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class Cause:
    """A likely cause; hints are words in the case that make it more likely."""

    text: str
    hints: re.Pattern


@dataclass(frozen=True)
class Step:
    """A next step; done matches how an engineer says it was already done."""

    text: str
    done: re.Pattern | None
    # Which of the area's causes this step checks, so the plan follows the ranked causes;
    # none means a first look that fits every cause.
    checks: tuple[int, ...] = ()


@dataclass(frozen=True)
class Area:
    """A problem area: the words that point to it, its usual causes and its checks."""

    key: str
    label: str
    signals: tuple[tuple[re.Pattern, float], ...]
    causes: tuple[Cause, ...]
    steps: tuple[Step, ...]


def _area(
    key: str,
    label: str,
    signals: list[tuple[str, float]],
    causes: list[tuple[str, str]],
    steps: list[tuple[str, str | None]],
    checks: list[tuple[int, ...]],
) -> Area:
    if len(checks) != len(steps) or any(i >= len(causes) for c in checks for i in c):
        raise ValueError(f"{key}: each step must name the causes it checks")
    return Area(
        key=key,
        label=label,
        signals=tuple((_rx(pattern), weight) for pattern, weight in signals),
        causes=tuple(Cause(text, _rx(hints)) for text, hints in causes),
        steps=tuple(
            Step(text, _rx(done) if done else None, tuple(checked))
            for (text, done), checked in zip(steps, checks, strict=True)
        ),
    )


AREAS: tuple[Area, ...] = (
    _area(
        "dns",
        "DNS / name resolution",
        [
            (r"\bdns\b", 3),
            (r"name resolution|\bresolv(?:e|es|ing)\b|could not be resolved|can'?t resolve", 3),
            (r"nslookup|flushdns|resolve-dnsname|\bdig\b", 2),
            (r"nxdomain|servfail|non-existent domain|err_name_not_resolved|dns_probe", 3),
            (r"server (?:ip address )?could not be found|could not find (?:the )?server", 2),
            (r"works (?:fine )?(?:by|with|via) (?:the )?ip|by ip (?:works|but)|ip works but", 3),
            (r"hosts file|conditional forward|forwarders?\b", 2),
            (r"\b(?:a|cname|srv|ptr) records?\b", 2),
        ],
        [
            (
                "Clients are using a DNS server that cannot answer for the internal zone (a "
                "router or public resolver handed out by DHCP instead of the domain controller).",
                r"8\.8\.8\.8|1\.1\.1\.1|router|\bisp\b|public|dhcp|internal|by ip",
            ),
            (
                "A stale or wrong record (A/CNAME), or a cached negative answer, is returning "
                "the old address or none at all.",
                r"moved|migrat|new ip|changed|old (?:ip|server|address)|stale|records?\b|"
                r"some users",
            ),
            (
                "The internal DNS server or its forwarders are failing, so lookups time out "
                "or fail for external names.",
                r"external|internet|websites?|forwarder|time(?:d)? ?out|servfail|everyone|"
                r"all users",
            ),
            (
                "A hosts file entry, a VPN-pushed DNS setting or a split-brain zone overrides "
                "the expected answer on some machines.",
                r"hosts file|vpn|split|suffix|remote|home|only (?:one|some)",
            ),
        ],
        [
            (
                "Run `ipconfig /all` on an affected machine and confirm its DNS servers are "
                "the internal ones, not the router or a public resolver.",
                r"ipconfig /all|checked (?:the )?dns (?:server|setting)",
            ),
            (
                "Run `nslookup {host}` against the internal DNS server and against a public "
                "resolver, and compare the answers.",
                r"nslookup|resolve-dnsname|\bdig\b",
            ),
            (
                "On the DNS server, check the record for {host} (timestamp, duplicates, "
                "scavenging), the DNS Server event log, and that the forwarders answer.",
                r"dns server (?:event )?log|checked (?:the )?(?:dns )?(?:records?|zone)|forwarders",
            ),
            (
                "Once the server answers correctly, clear the client cache with "
                "`ipconfig /flushdns` and re-register with `ipconfig /registerdns`.",
                r"flush\w*\s+(?:the\s+)?(?:dns|cache)|flushdns|(?:dns|cache)\s+(?:was\s+)?flushed",
            ),
            (
                "Check the hosts file (C:\\Windows\\System32\\drivers\\etc\\hosts) and any "
                "DNS settings a VPN client pushes on the affected machine.",
                r"hosts file",
            ),
        ],
        checks=[(), (), (1, 2), (1,), (3,)],
    ),
    _area(
        "dhcp",
        "DHCP / IP addressing",
        [
            (r"\bdhcp\b", 3),
            (r"ip (?:address )?conflict|duplicate ip|address conflict", 4),
            (r"169\.254\.\d{1,3}\.\d{1,3}|apipa|self-assigned", 4),
            (r"(?:not|n't) (?:getting|get|pulling) an? (?:ip|address)|no ip address|\blease\b", 3),
            (r"scope (?:is )?(?:full|exhausted)|out of (?:ip )?addresses", 4),
            (r"ipconfig /(?:release|renew)", 2),
            (r"\bstatic ip\b|\bip helper\b|dhcp relay", 1),
        ],
        [
            (
                "The DHCP scope is exhausted or the DHCP service is down, so clients fall "
                "back to 169.254.x.x addresses.",
                r"169\.254|apipa|scope|exhaust|full|new devices|guests?|many",
            ),
            (
                "Two devices share an address: a static IP inside the DHCP range, or a rogue "
                "DHCP server such as a consumer router plugged into the LAN.",
                r"conflict|duplicate|static|rogue|router|intermittent",
            ),
            (
                "DHCP requests don't reach the server: a missing IP helper/relay on the VLAN, "
                "or a switch port in the wrong VLAN.",
                r"vlan|helper|relay|switch|subnet|floor|new office|one port",
            ),
        ],
        [
            (
                "Run `ipconfig /all` on an affected client and note the address, lease and "
                "DHCP server; a 169.254.x.x address means no lease was obtained.",
                r"ipconfig /all",
            ),
            (
                "Check the DHCP server: service running, scope statistics "
                "(`Get-DhcpServerv4ScopeStatistics`) and free addresses; shorten the lease or "
                "widen the scope if it is exhausted.",
                r"scope statistics|checked (?:the )?(?:dhcp )?(?:scope|server)",
            ),
            (
                "Find the conflicting device: `arp -a` and the switch MAC table for {ip}, "
                "static devices in the DHCP range, or a rogue DHCP server on the VLAN.",
                r"\barp\b|mac (?:address )?table",
            ),
            (
                "If the client sits on another VLAN, confirm the gateway's IP helper/DHCP "
                "relay points at the DHCP server.",
                r"ip helper|dhcp relay",
            ),
            (
                "After the server side is fixed, release and renew on the client "
                "(`ipconfig /release`, then `ipconfig /renew`).",
                r"ipconfig /re(?:lease|new)|re(?:leased|newed)\s+(?:the\s+)?(?:ip|lease)",
            ),
        ],
        checks=[(), (0,), (1,), (2,), (0, 1)],
    ),
    _area(
        "vpn",
        "VPN / remote access",
        [
            (r"\bvpn\b", 4),
            (
                r"anyconnect|globalprotect|forticlient|openvpn|wireguard|\bipsec\b|\bl2tp\b|"
                r"\bsstp\b|always ?on vpn|netextender|ssl ?vpn",
                3,
            ),
            (r"\btunnel\b|split tunnel", 2),
            (r"\bike(?:v[12])?\b|phase ?(?:1|2|one|two)\b", 2),
            (r"remote (?:users?|workers?|access)|work(?:ing)? from home|\bwfh\b", 1),
        ],
        [
            (
                "Authentication fails at the VPN gateway: expired password, an MFA/RADIUS "
                "problem, or the user is not in the allowed group.",
                r"auth|password|credential|mfa|radius|log ?in|group|denied",
            ),
            (
                "The tunnel comes up but traffic or DNS doesn't pass: wrong split-tunnel "
                "routes, a home subnet overlapping the office one, or no internal DNS pushed.",
                r"connect(?:s|ed) but|can'?t (?:reach|access)|split|route|subnet|192\.168\.[01]\.|"
                r"dns|resolve|drive",
            ),
            (
                "The VPN client or its certificate is outdated or expired, or the gateway's "
                "certificate changed.",
                r"certificate|\bcert\b|expired|update|version|upgrade",
            ),
            (
                "An IPsec phase 1/2 mismatch or the user's ISP/NAT blocking UDP 500/4500 stops "
                "the tunnel from coming up.",
                r"ipsec|phase|\bike|nat\b|udp|\bisp\b|hotel|4500|site-to-site",
            ),
        ],
        [
            (
                "Read the VPN gateway's log for the user's attempt at the time of failure: "
                "authentication result, assigned address, disconnect reason.",
                r"(?:vpn|gateway|firewall) logs?",
            ),
            (
                "Check the user's account: not locked out, password not expired, member of "
                "the VPN group, MFA enrolled.",
                r"reset\w*\s+(?:the\s+|their\s+|his\s+|her\s+)?password|"
                r"password\s+(?:was\s+)?reset|unlock",
            ),
            (
                "While connected, run `ipconfig /all` and `route print`: the tunnel adapter "
                "should have an address, internal DNS servers and routes to the office "
                "subnet, and the home LAN must not overlap it.",
                r"route print",
            ),
            (
                "Test from another network (a phone hotspot) to rule out the local ISP or "
                "router blocking UDP 500/4500.",
                r"hotspot|another network|different network|tethered",
            ),
            (
                "Reinstall or update the VPN client and re-import its profile or certificate.",
                r"re-?install\w*\s+(?:the\s+)?(?:vpn|client|anyconnect|globalprotect|forticlient)",
            ),
        ],
        checks=[(), (0,), (1,), (3,), (2,)],
    ),
    _area(
        "ad_auth",
        "Active Directory / sign-in (lockout, password, Kerberos)",
        [
            (r"locked out|lockouts?\b|account (?:is |keeps )?(?:getting )?locked", 4),
            (
                r"password (?:has |is )?expired|expired password|must change (?:the |"
                r"their )?password",
                4,
            ),
            (r"active directory|(?-i:\bAD\b)|domain controllers?|\bdc\d*\b|\bpdc\b", 2),
            (r"kerberos|krbtgt|ticket granting", 3),
            (r"time skew|clock skew|time (?:is )?(?:off|wrong|out of sync)|\bw32tm\b|\bntp\b", 3),
            (r"trust relationship|secure channel", 4),
            (
                r"can'?t (?:log ?in|sign ?in|log ?on)|unable to (?:log|sign) ?(?:in|on)|"
                r"(?:login|logon|sign-in) fail|(?:wrong|incorrect|bad) password",
                2,
            ),
            (r"\bgpo\b|group policy|gpupdate|netlogon|domain[- ]join", 2),
        ],
        [
            (
                "Something still uses the old password (a phone's mail profile, a mapped "
                "drive, saved credentials, a scheduled task or a service) and keeps locking "
                "the account.",
                r"lock|keeps|again|repeated|every (?:few|\d+)|phone|mobile|password change|"
                r"changed (?:the |their |his |her )?password",
            ),
            (
                "The password has expired or must be changed at next logon, which VPN, RDP "
                "and Outlook clients cannot prompt for.",
                r"expir|must change|next logon|90 days|vpn|rdp|remote",
            ),
            (
                "Kerberos fails because the machine's clock is more than 5 minutes off the "
                "domain controller's.",
                r"kerberos|skew|\btime\b|clock|ntp|w32tm|krb",
            ),
            (
                "The computer's secure channel with the domain is broken (trust relationship "
                "failed), e.g. after a snapshot restore or a long time offline.",
                r"trust relationship|secure channel|restor|snapshot|reimag|offline",
            ),
            (
                "Domain controllers are not replicating, so a password change or unlock has "
                "not reached the DC the user authenticates against.",
                r"replicat|two dcs|second dc|other dc|multiple (?:dcs|domain controllers)|"
                r"\bsites?\b",
            ),
        ],
        [
            (
                "On the PDC emulator, filter the Security log for Event ID 4740 for the user: "
                "its Caller Computer Name shows which machine sends the bad password.",
                r"4740|caller computer",
            ),
            (
                "Check the account with `Get-ADUser <user> -Properties LockedOut,"
                "PasswordExpired,PasswordLastSet,BadLogonCount,LastBadPasswordAttempt`, then "
                "unlock it or reset the password.",
                r"get-aduser|checked (?:the )?(?:account|user) in (?:ad|active directory)",
            ),
            (
                "Remove stale credentials on the user's devices: Credential Manager, mapped "
                "drives, phone mail profiles, and services or scheduled tasks running as the "
                "user.",
                r"credential manager|(?:clear\w*|remov\w*|delet\w*)\s+(?:the\s+|saved\s+|"
                r"cached\s+|stored\s+)*credentials",
            ),
            (
                "Look for phones and tablets still syncing mail with the old password "
                "(`Get-MobileDevice -Mailbox <user>`, or the sign-in logs' failures by device).",
                r"get-mobiledevice|(?:phone|mobile|tablet)\s+(?:\w+\s+){0,3}(?:removed|updated|re-?entered)|"
                r"(?:removed|updated|re-?entered)\s+(?:\w+\s+){0,3}(?:phone|mobile|tablet)",
            ),
            (
                "Compare the client's and DC's clocks (`w32tm /query /status`, "
                "`w32tm /stripchart /computer:<dc>`) and resync with `w32tm /resync` if they "
                "differ by minutes.",
                r"w32tm|time sync|resync",
            ),
            (
                "If logon reports a trust relationship failure, repair it on the machine with "
                "`Test-ComputerSecureChannel -Repair -Credential <domain admin>`.",
                r"test-computersecurechannel|re-?join\w*",
            ),
            (
                "Check replication and DC health with `repadmin /replsummary` and `dcdiag /q`.",
                r"repadmin|dcdiag",
            ),
        ],
        checks=[(0,), (0, 1), (0,), (0,), (2,), (3,), (4,)],
    ),
    _area(
        "m365_mail",
        "Microsoft 365 / Exchange / Outlook mail",
        [
            (r"\boutlook\b", 3),
            (r"\bexchange\b|\bowa\b|outlook on the web", 3),
            (r"microsoft 365|office 365|\bm365\b|\bo365\b|entra|azure ad", 2),
            (
                r"mail ?flow|e-?mails? (?:are |is )?(?:not|n't) (?:being )?(?:sent|received|"
                r"delivered|arriving)|"
                r"not receiving (?:any )?(?:e-?mails?|mail)|bounc(?:e|es|ed|ing)|\bndr\b|"
                r"undeliverable|non-delivery",
                4,
            ),
            (r"\bspf\b|\bdkim\b|\bdmarc\b", 4),
            (r"\bmx\b|autodiscover|\bsmtp\b", 2),
            (r"\bspam\b|\bjunk\b|quarantine", 2),
            (r"mailbox|\bost\b|\bpst\b|offline address book|\boab\b", 3),
            (r"\be-?mails?\b|\bmail\b", 1),
        ],
        [
            (
                "The Outlook profile or its cached OST file is damaged, so Outlook prompts, "
                "hangs or stops syncing.",
                r"profile|\bost\b|cached|sync|hang|not responding|prompt|disconnected|one user",
            ),
            (
                "Modern authentication is failing: stale tokens or saved credentials, or a "
                "conditional access/MFA policy is blocking the sign-in.",
                r"prompt|password|credential|mfa|conditional access|sign.?in|modern auth|token|"
                r"entra|azure ad",
            ),
            (
                "Mail is rejected or junked because SPF, DKIM or DMARC don't authorise the "
                "sending server.",
                r"spf|dkim|dmarc|5\.7\.|spam|junk|reject|bounc|ndr|external|outside",
            ),
            (
                "Autodiscover or the MX record still points at an old server after a "
                "migration.",
                r"autodiscover|\bmx\b|migrat|on-?prem|hybrid|old server|cname|moved",
            ),
            (
                "The mailbox is full, or a transport rule, inbox rule or connector is "
                "redirecting or blocking messages.",
                r"full|quota|\brules?\b|connector|transport|forward|redirect|mailbox size",
            ),
        ],
        [
            (
                "Run a message trace in the Exchange admin center for the sender and recipient "
                "and read the delivery status and any NDR code.",
                r"message trace|\btrace\b",
            ),
            (
                "Check Outlook on the web and a new Outlook profile (Control Panel > Mail > "
                "Show Profiles): if those work, the local profile or OST is at fault.",
                r"(?:new|re-?creat\w*|rebuil\w*|fresh)\s+(?:an?\s+|the\s+)?(?:outlook\s+)?profile|"
                r"\bowa\b|outlook on the web|webmail",
            ),
            (
                "Clear Office's saved credentials (Credential Manager, MicrosoftOffice entries), "
                "sign out and back in to Office, and read the Entra ID sign-in logs for "
                "conditional access failures.",
                r"credential manager|sign-?in logs?|(?:clear\w*|remov\w*)\s+(?:the\s+|saved\s+|"
                r"cached\s+)*credentials",
            ),
            (
                "Check the user in the Microsoft 365 admin center (sign-in allowed, licence, MFA "
                "state) and that Office is current; run the Outlook diagnostics in Microsoft "
                "Support and Recovery Assistant.",
                r"admin center|\bsara\b|support and recovery|updated? (?:ms\s+)?office",
            ),
            (
                "Check SPF, DKIM and DMARC for {domain} (`nslookup -type=txt {domain}`, "
                "`nslookup -type=txt _dmarc.{domain}`) and the headers of a rejected message.",
                r"\bspf\b|\bdkim\b|\bdmarc\b|headers",
            ),
            (
                "Verify Autodiscover and MX for {domain} (`nslookup -type=mx {domain}`, "
                "Microsoft Remote Connectivity Analyzer) and the mailbox's size against its "
                "quota.",
                r"autodiscover|connectivity analyzer|\bmx\b",
            ),
        ],
        checks=[(2, 4), (0,), (1,), (0, 1), (2,), (3, 4)],
    ),
    _area(
        "printing",
        "Printing / print spooler",
        [
            (r"\bprint(?:er|ers|ing)?\b", 3),
            (r"spooler|spoolsv", 4),
            (r"print queue|jobs? (?:are )?stuck|stuck in (?:the )?queue", 3),
            (r"scan(?:ning)?[- ]to[- ](?:e-?mail|folder)|\bmfp\b|copier", 2),
            (r"toner|paper jam", 2),
        ],
        [
            (
                "The Print Spooler service has stopped or is stuck on a corrupt job.",
                r"spool|stuck|queue|jobs?|not printing|nothing prints",
            ),
            (
                "A driver problem: a wrong or mismatched driver, or a Windows update's print "
                "hardening (0x0000011b) broke the shared printer connection.",
                r"driver|update|0x0000011b|0x00000709|0x0000007c|\bkb\d+|patch",
            ),
            (
                "The printer's IP address changed (DHCP) or the port still points at the old "
                "address, so it shows offline.",
                r"offline|\bip\b|dhcp|moved|\bport\b|network",
            ),
            (
                "Scan-to-email or scan-to-folder fails after an SMTP authentication change "
                "(basic auth off in Microsoft 365) or a share/password change.",
                r"scan|smtp|smb|share|password",
            ),
        ],
        [
            (
                "Restart the spooler and clear stuck jobs: `net stop spooler`, delete the "
                "files in C:\\Windows\\System32\\spool\\PRINTERS, `net start spooler`.",
                r"spool|cleared (?:the )?(?:print )?queue",
            ),
            (
                "Ping the printer and open its web page; compare its address with the port "
                "configured on the print server and give it a DHCP reservation.",
                r"ping\w*\s+(?:the\s+)?printer|printer\s+(?:\w+\s+){0,2}ping",
            ),
            (
                "Compare recently installed updates (`Get-HotFix | Sort-Object InstalledOn "
                "-Descending`) with when printing broke, and reinstall the printer driver.",
                r"(?:re-?install\w*|updat\w*|roll\w* back)\s+(?:the\s+)?(?:\w+\s+)?driver",
            ),
            (
                "Read Event Viewer > Applications and Services Logs > Microsoft > Windows > "
                "PrintService (Admin and Operational) for the failing job.",
                r"printservice",
            ),
            (
                "For scan-to-email, check the device's SMTP settings (smtp.office365.com:587 "
                "with TLS and an account allowed SMTP AUTH, or a relay connector).",
                None,
            ),
        ],
        checks=[(0,), (2,), (1,), (0, 1), (3,)],
    ),
    _area(
        "disk",
        "Disk space",
        [
            (
                r"disk (?:is )?full|(?:drive|volume|partition) (?:is )?full|"
                r"c: ?(?:drive )?(?:is )?full|"
                r"low (?:on )?(?:disk )?space|out of (?:disk )?space|no space left|"
                r"running out of (?:disk )?space|"
                r"(?:insufficient|not enough) (?:disk |free )?space",
                5,
            ),
            (r"disk space|free space|storage (?:is )?full", 3),
            (r"\b\d+(?:\.\d+)? ?(?:mb|kb) (?:free|left)\b|0 bytes free", 3),
            (r"winsxs|pagefile|hiberfil|disk cleanup|treesize|wiztree|windirstat", 2),
        ],
        [
            (
                "Logs, temp files or a runaway application (IIS/SQL logs, a backup agent's "
                "cache, user downloads) filled the volume.",
                r"\blogs?\b|temp|sql|iis|download|cache|grow|suddenly|fill\w* (?:up )?again|hours",
            ),
            (
                "Old updates and the component store (WinSxS, SoftwareDistribution), the page "
                "file or hibernation file take much of a small system drive.",
                r"winsxs|update|pagefile|hiberfil|system drive|\bc:",
            ),
            (
                "Shadow copies, restore points or local backup snapshots are using the free "
                "space.",
                r"shadow|\bvss\b|restore point|snapshot|backup",
            ),
            (
                "The volume is too small for its workload and needs extending or data moved "
                "off it.",
                r"\bvm\b|virtual|extend|partition|small|server|database",
            ),
        ],
        [
            (
                "Find what uses the space with WizTree or TreeSize, or `Get-ChildItem C:\\ "
                "-Recurse -File -ErrorAction SilentlyContinue | Sort-Object Length "
                "-Descending | Select-Object -First 20`.",
                r"treesize|wiztree|windirstat|what(?:'s| is| was) (?:using|taking)",
            ),
            (
                "Run Disk Cleanup with system files, then "
                "`Dism /Online /Cleanup-Image /StartComponentCleanup` to shrink WinSxS.",
                r"disk cleanup|cleanmgr|startcomponentcleanup",
            ),
            (
                "Check shadow copy storage (`vssadmin list shadowstorage`) and cap it "
                "(`vssadmin resize shadowstorage`).",
                r"vssadmin|shadow",
            ),
            (
                "Rotate or clear the largest logs (IIS, SQL, application) and empty "
                "C:\\Windows\\Temp and the users' temp folders.",
                r"(?:clear\w*|delet\w*|empt\w*|remov\w*|purg\w*)\s+(?:the\s+|all\s+|"
                r"old\s+)*(?:\w+\s+)?(?:temp|tmp|logs?)\b",
            ),
            (
                "If it's a VM, extend the virtual disk and then the partition "
                "(`Resize-Partition`).",
                r"extend\w*",
            ),
        ],
        checks=[(), (1,), (2,), (0,), (3,)],
    ),
    _area(
        "updates_boot",
        "Windows Update / boot / blue screen",
        [
            (r"windows updates?|\bwsus\b|cumulative update|feature update|\bkb\d{6,7}\b", 3),
            (
                r"boot ?loop|(?:reboot|restart) loop|undoing changes|automatic repair|"
                r"stuck (?:on|at) (?:restarting|preparing|working on updates|"
                r"getting windows ready)",
                5,
            ),
            (r"\bbsod\b|blue screen|bug ?check|stop code|minidump|crash dump", 5),
            (
                r"inaccessible_boot_device|critical_process_died|irql_not_less_or_equal|"
                r"page_fault_in_nonpaged_area|kmode_exception|system_service_exception|"
                r"whea_uncorrectable",
                5,
            ),
            (r"won'?t boot|doesn'?t boot|fails to boot|black screen", 4),
            (r"updates? (?:fail(?:s|ed|ing)?|won'?t install|keeps? failing)|failed to install", 4),
            (r"safe mode|winre|recovery environment|sfc /scannow|\bdism\b", 2),
        ],
        [
            (
                "A recent update or driver is incompatible and causes the crash or boot loop.",
                r"after (?:the |an? |last )?(?:update|patch)|\bkb\d+|driver|recent|last night|"
                r"patch",
            ),
            (
                "Corrupted system files or a damaged component store make updates fail and "
                "roll back.",
                r"fail|roll|undo|0x800f|0x8007|corrupt|\bsfc\b|\bdism\b",
            ),
            (
                "Failing hardware (disk, memory) or a storage controller/driver change causes "
                "stop errors or INACCESSIBLE_BOOT_DEVICE.",
                r"inaccessible|whea|\bdisk\b|ssd|\bram\b|memory|hardware|smart|bad block|"
                r"controller",
            ),
            (
                "Too little free space, or a small recovery partition, stops the update from "
                "installing.",
                r"space|full|recovery partition|0x80070070|0x800f0922|0x80070643",
            ),
            (
                "Security software or a pending reboot blocks the update.",
                r"antivirus|\bav\b|\bedr\b|pending|security software",
            ),
        ],
        [
            (
                "Read the stop code and the latest minidump (C:\\Windows\\Minidump) with "
                "WinDbg `!analyze -v`, and the System log's Event IDs 41, 1001 and 6008 "
                "around the crash.",
                r"windbg|minidump|analy[sz]\w* (?:the )?dump",
            ),
            (
                "If it won't boot, use WinRE: Startup Repair, then Uninstall Updates (latest "
                "quality update), or Safe Mode to roll back the last driver.",
                r"startup repair|safe mode|uninstall\w*\s+(?:the\s+)?(?:\w+\s+)?updates?|"
                r"rolled back",
            ),
            (
                "Repair system files with `DISM /Online /Cleanup-Image /RestoreHealth`, then "
                "`sfc /scannow`.",
                r"\bsfc\b|\bdism\b|restorehealth",
            ),
            (
                "Read the failing update's error in Settings > Update history or "
                "`Get-WindowsUpdateLog`, then reset Windows Update (stop wuauserv and bits, "
                "rename C:\\Windows\\SoftwareDistribution).",
                r"softwaredistribution|reset\w*\s+(?:the\s+)?(?:windows\s+)?update",
            ),
            (
                "Test the hardware: disk health (`Get-PhysicalDisk`, the vendor's tool) and "
                "memory (`mdsched`).",
                r"\bsmart\b|mdsched|memory (?:test|diagnostic)|memtest|chkdsk",
            ),
        ],
        checks=[(0, 2), (0,), (1,), (1, 3, 4), (2,)],
    ),
    _area(
        "certs",
        "Certificates / TLS",
        [
            (r"certificates?|\bcerts?\b|\bssl\b|\btls\b", 3),
            (
                r"not secure|connection is not private|err_cert|sec_error|ssl_error|"
                r"handshake (?:failed|failure)|cert(?:ificate)? (?:has |is )?expired|untrusted|"
                r"self-signed",
                4,
            ),
            (r"let'?s ?encrypt|\bacme\b|certbot|win-acme|wildcard|\bcsr\b|\bpfx\b|intermediate", 3),
            (r"schannel", 3),
        ],
        [
            (
                "The certificate has expired, or its automatic renewal (Let's Encrypt/ACME "
                "job) stopped working.",
                r"expir|renew|let'?s ?encrypt|acme|certbot|today|date",
            ),
            (
                "The server sends an incomplete chain (missing intermediate), so some clients "
                "don't trust it.",
                r"chain|intermediate|some (?:users|clients|devices)|android|iphone|java|untrusted",
            ),
            (
                "The name users connect to is not on the certificate, or the wrong "
                "certificate is bound to the site or service.",
                r"mismatch|\bsan\b|hostname|name|binding|bound|wrong cert|wildcard",
            ),
            (
                "A TLS version or cipher mismatch (TLS 1.0/1.1 disabled, Schannel errors) "
                "breaks the handshake with older clients or devices.",
                r"tls ?1\.[01]|protocol|cipher|schannel|handshake|older|legacy|printer|scanner",
            ),
        ],
        [
            (
                "Inspect the served certificate and chain: `openssl s_client -connect "
                "{host}:443 -servername {host} -showcerts` (expiry, names, issuer chain).",
                r"openssl|s_client|ssl ?labs|checked (?:the )?cert",
            ),
            (
                "Renew or re-issue the certificate, install it with its full chain, and read "
                "the renewal job's log (win-acme/certbot scheduled task).",
                r"renew\w*|re-?issu\w*|new cert",
            ),
            (
                "Confirm the right certificate is bound to the service (IIS bindings, "
                "`netsh http show sslcert`, `Get-ExchangeCertificate`, RD Gateway, the "
                "firewall's SSL VPN).",
                r"binding",
            ),
            (
                "Check the System log for Schannel errors (Event IDs 36874, 36887, 36888) and "
                "the TLS versions both ends allow.",
                r"schannel",
            ),
        ],
        checks=[(), (0, 1), (2,), (3,)],
    ),
    _area(
        "backup",
        "Backup failures",
        [
            (r"\bbackups?\b", 3),
            (
                r"backups? (?:job )?(?:fail\w*|errors?|didn'?t run|missed|warnings?)|"
                r"failed backups?",
                5,
            ),
            (
                r"veeam|datto|acronis|shadowprotect|storagecraft|windows server backup|wbadmin|"
                r"axcient|backup exec|hyper backup|macrium|unitrends|rubrik",
                4,
            ),
            (r"\bvss\b|volume shadow|vss writers?", 4),
            (r"retention|offsite|replication job|restore point", 1),
        ],
        [
            (
                "A VSS writer (often SQL, Exchange or System Writer) is in a failed state, so "
                "the snapshot for the backup cannot be taken.",
                r"\bvss\b|writer|snapshot|shadow|0x800423f",
            ),
            (
                "The backup target is full or unreachable: repository/NAS out of space, share "
                "credentials changed, or the cloud upload failing.",
                r"full|space|target|repository|\bnas\b|share|credential|password|cloud|upload|"
                r"offsite|unreachable",
            ),
            (
                "The job collides with another job, an antivirus scan or maintenance, or the "
                "backup agent is stopped or outdated.",
                r"overlap|schedule|agent|service|version|update|time(?:d)? ?out",
            ),
            (
                "Changed block tracking or the hypervisor integration broke after a host or VM "
                "change.",
                r"\bcbt\b|changed block|hyper-?v|vmware|esxi|\bhost\b|\bvm\b|migrat",
            ),
        ],
        [
            (
                "Open the failed job's log in the backup console and note the exact error and "
                "when it occurred.",
                r"job logs?|backup logs?",
            ),
            (
                "On the protected machine run `vssadmin list writers` and restart the service "
                "behind any writer that is not 'Stable, No error'.",
                r"vssadmin|writers?",
            ),
            (
                "Check the backup target: free space, reachability, and the credentials the "
                "job uses to reach it.",
                r"(?:target|repository|nas)\s+(?:\w+\s+){0,3}(?:space|reachable|fine|ok)",
            ),
            (
                "Confirm the backup agent service runs and is a supported version, then run "
                "the job manually outside business hours and test-restore one file.",
                r"(?:re-?ran|re-?run|retr(?:ied|y)|ran)\s+(?:the\s+)?(?:backup|job)|"
                r"manual(?:ly)? (?:backup|run)",
            ),
        ],
        checks=[(), (0,), (1,), (2, 3)],
    ),
    _area(
        "network",
        "Network / switching / Wi-Fi",
        [
            (r"packet loss|dropp(?:ing|ed) packets|high latency|\blatency\b|jitter|\blaggy\b", 4),
            (r"wi-?fi|wireless|access points?|\bssid\b|roaming|\bsignal\b", 3),
            (
                r"\bswitch(?:es|port)?\b|\bvlan\b|spanning tree|\bstp\b|broadcast storm|uplink|"
                r"port flap",
                2,
            ),
            (
                r"(?:internet|network|connection) (?:is |keeps )?(?:down|slow|dropping|drops|"
                r"intermittent|unstable)|"
                r"intermittent(?:ly)? (?:drops?|disconnects?)|disconnect(?:s|ing)|no internet|"
                r"limited connectivity",
                4,
            ),
            (r"\bping\b|traceroute|tracert|pathping|\bmtr\b", 2),
            (r"\bisp\b|modem|\bwan\b|fib(?:re|er)\b|circuit", 2),
            (r"\bcable\b|\bnic\b|network adapter|ethernet|duplex", 2),
        ],
        [
            (
                "Wi-Fi trouble: channel congestion or interference, weak signal, or clients "
                "sticking to a distant access point.",
                r"wi-?fi|wireless|signal|\bap\b|access point|roam|rooms?|upstairs|floor",
            ),
            (
                "A switching fault: a loop or broadcast storm, a flapping uplink, or a "
                "speed/duplex mismatch on a port.",
                r"switch|loop|storm|vlan|\bstp\b|spanning|flap|duplex|all users|whole office|"
                r"everyone",
            ),
            (
                "The ISP link or edge device drops packets or is saturated (backups, updates "
                "or uploads using the bandwidth).",
                r"\bisp\b|internet|\bwan\b|modem|saturat|bandwidth|upload|speed ?test|external",
            ),
            (
                "One device's cable, NIC, driver or power-saving setting causes the drops.",
                r"one (?:user|pc|computer|laptop|machine)|single|cable|\bnic\b|adapter|driver|"
                r"power sav|dock",
            ),
        ],
        [
            (
                "Find where loss starts: `ping -n 100` the gateway, then a public address "
                "(1.1.1.1), then `pathping` to the affected service.",
                r"\bping\w*|tracert|traceroute|pathping",
            ),
            (
                "Read the switch logs and interface counters for errors, flapping ports and "
                "spanning-tree changes (or the controller's dashboard).",
                r"switch (?:logs?|counters?)|interface counters|checked (?:the )?switch",
            ),
            (
                "For Wi-Fi, check the client's signal (RSSI/SNR), channel utilisation and "
                "which access point it joined; compare with a wired connection.",
                r"\bwired\b|ethernet cable|plugged in",
            ),
            (
                "Check WAN utilisation on the firewall at the time of the problem and the "
                "ISP's status page; run a speed test from a wired client.",
                r"speed ?test|\bisp\b",
            ),
            (
                "Swap the cable and switch port, update the NIC driver and turn off NIC power "
                "saving on the affected machine.",
                r"(?:swapp?\w*|replac\w*|chang\w*)\s+(?:the\s+|a\s+)?(?:\w+\s+)?(?:cable|port|"
                r"nic)|new cable",
            ),
        ],
        checks=[(), (1,), (0,), (2,), (3,)],
    ),
    _area(
        "firewall",
        "Firewall / ports",
        [
            (
                r"firewall|fortigate|sonicwall|meraki mx|pfsense|sophos xg|watchguard|palo alto|"
                r"\bnsg\b",
                4,
            ),
            (
                r"\bports? \d{2,5}\b|port forward|\bnat\b|\bacl\b|port (?:is )?(?:closed|blocked)|"
                r"\btcp\b|\budp\b",
                3,
            ),
            (r"connection refused|\brefused\b|test-netconnection|portqry|\btelnet\b", 3),
            (r"\brdp\b|\b3389\b|remote desktop", 2),
            (r"\bips\b|intrusion prevention|web filter|content filter|ssl inspection|geo-?ip", 3),
        ],
        [
            (
                "A firewall rule or NAT/port forward is missing or was changed, so the port "
                "isn't reachable from where the users are.",
                r"\brules?\b|\bnat\b|forward|\bport\b|chang|new|policy|upgrade",
            ),
            (
                "The server's Windows Defender Firewall profile is Public instead of Domain "
                "and blocks inbound traffic.",
                r"windows firewall|defender firewall|profile|public|domain network|server",
            ),
            (
                "IPS, web filtering, geo-IP blocking or SSL inspection drops the traffic.",
                r"\bips\b|filter|geo|inspection|blocked|category|certificate",
            ),
            (
                "The service isn't listening on that port (stopped, or bound elsewhere), which "
                "looks like a firewall block.",
                r"refused|listening|service|netstat|stopped",
            ),
        ],
        [
            (
                "Test the port from the users' side: `Test-NetConnection {host} -Port {port}` "
                "(or `nc -vz`), and again from the server's own network.",
                r"test-netconnection|telnet|portqry|\bnc -",
            ),
            (
                "On the server, confirm the service listens (`netstat -ano | findstr :{port}`) "
                "and check the firewall profile and rules (`Get-NetConnectionProfile`, "
                "`Get-NetFirewallRule`).",
                r"netstat|get-netfirewall|get-netconnectionprofile",
            ),
            (
                "Search the edge firewall's traffic log for the source and destination at the "
                "time of failure, and read the matching policy, NAT and IPS/web-filter verdict.",
                r"(?:firewall|traffic) logs?",
            ),
            (
                "Compare the firewall's recent configuration changes with when the problem "
                "started.",
                r"config(?:uration)? (?:changes|history|revisions?)",
            ),
        ],
        checks=[(), (1, 3), (0, 2), (0,)],
    ),
    _area(
        "permissions",
        "Permissions / access denied",
        [
            (
                r"access (?:is )?denied|permission(?:s)? denied|(?:don'?t|do not|doesn'?t|"
                r"does not) have "
                r"(?:the )?(?:permission|access)|not authori[sz]ed|\bforbidden\b|\b403\b",
                5,
            ),
            (r"permissions?\b|\bntfs\b|share permissions|security tab|inheritance", 3),
            (
                r"sharepoint|onedrive|shared (?:drive|folder)|mapped drive|network drive|"
                r"file share|"
                r"\bshares?\b",
                2,
            ),
            (r"read-?only|can'?t (?:save|open|edit)|locked for editing|locked by another user", 2),
            (r"security group|group membership|member of", 2),
        ],
        [
            (
                "The user isn't in the security group that grants access, or was just added "
                "and hasn't signed out and in, so the token lacks the new group.",
                r"group|new (?:user|starter|employee|hire)|added|member|recently|yesterday",
            ),
            (
                "NTFS and share permissions disagree (the stricter one wins) or inheritance "
                "was broken on the folder.",
                r"ntfs|\bshares?\b|inherit|folder|subfolder|moved|copied",
            ),
            (
                "SharePoint/OneDrive: the item has unique permissions, external sharing is "
                "off, or the user is signed in with another account.",
                r"sharepoint|onedrive|teams|external|guest|link|\bsite\b",
            ),
            (
                "A file lock or read-only attribute, or Defender's Controlled Folder Access, "
                "blocks writes.",
                r"locked|read-?only|controlled folder|defender|can'?t save|antivirus",
            ),
        ],
        [
            (
                "Check the user's effective access on the exact path (Properties > Security > "
                "Advanced > Effective Access, or `icacls \"<path>\"`) for NTFS and share "
                "permissions.",
                r"effective access|icacls|checked (?:the )?(?:ntfs |share |folder )?permissions",
            ),
            (
                "Confirm group membership (`whoami /groups` as the user, "
                "`Get-ADPrincipalGroupMembership <user>`) and have the user sign out and in "
                "after any change.",
                r"whoami|group membership|added\s+(?:him|her|them|the user)\s+(?:\w+\s+){0,2}group|"
                r"(?:logged|signed) (?:off|out) and (?:back )?(?:on|in)",
            ),
            (
                "For SharePoint or OneDrive, use Check Permissions on the site or item and "
                "review sharing settings in the SharePoint admin center.",
                r"check permissions",
            ),
            (
                "Look for open-file locks (Computer Management > Shared Folders > Open Files) "
                "and Controlled Folder Access blocks in Defender's protection history.",
                r"open files|controlled folder",
            ),
        ],
        checks=[(1, 0), (0,), (2,), (3,)],
    ),
    _area(
        "performance",
        "Performance (CPU / memory / disk)",
        [
            (
                r"high cpu|cpu (?:is |at |usage )?(?:pegged|maxed|spik\w*|100)|100 ?% cpu|"
                r"cpu usage",
                5,
            ),
            (
                r"high memory|memory (?:leak|usage|pressure)|out of memory|ram (?:usage|is full)|"
                r"paging",
                4,
            ),
            (
                r"\bslow(?:ness|ly| to| down)?\b|sluggish|takes (?:forever|ages|minutes)|freez\w*|"
                r"not responding|unresponsive",
                2,
            ),
            (r"task manager|resource monitor|perfmon|process explorer", 2),
            (r"100 ?% disk|disk (?:usage|at) 100|disk queue|\biops\b", 3),
            (r"msmpeng|search ?indexer|tiworker|svchost", 3),
        ],
        [
            (
                "One process (an antivirus scan, the Windows Update worker, the search indexer "
                "or a line-of-business app) is using the CPU.",
                r"\bcpu\b|msmpeng|tiworker|svchost|indexer|scan|process",
            ),
            (
                "Memory is exhausted (a leaking application, or too many users on an RDS "
                "host), forcing heavy paging.",
                r"memory|\bram\b|paging|leak|\brds\b|terminal|session|users",
            ),
            (
                "The disk is the bottleneck: 100% active time, a failing or slow HDD, or "
                "storage latency on the host.",
                r"\bdisk\b|\bhdd\b|100 ?% disk|storage|latency|iops|spinning",
            ),
            (
                "Startup items, browser extensions, or an old or overheating machine make the "
                "endpoint slow.",
                r"startup|\bboot\b|browser|chrome|extension|\bold\b|laptop|thermal|\bfan\b|\bhot\b",
            ),
        ],
        [
            (
                "Find the top consumers in Task Manager/Resource Monitor (CPU, memory, disk) "
                "or with `Get-Process | Sort-Object CPU -Descending | Select-Object -First 10`.",
                r"task manager|resource monitor|get-process|process explorer",
            ),
            (
                "Record a short Performance Monitor trace during the slowness (% Processor "
                "Time, Available MBytes, Avg. Disk sec/Transfer).",
                r"perfmon|performance monitor",
            ),
            (
                "Check disk health and latency (`Get-PhysicalDisk`, SMART, the datastore's "
                "latency if it's a VM).",
                r"\bsmart\b|get-physicaldisk|crystaldisk",
            ),
            (
                "Line the slowness up with scheduled work (antivirus full scans, backups, "
                "updates) and move or throttle what collides.",
                None,
            ),
            (
                "Review startup apps and services (Task Manager > Startup, Autoruns) and the "
                "RAM against the workload.",
                r"autoruns|startup (?:items|apps)|msconfig",
            ),
        ],
        checks=[(), (0, 1, 2), (2,), (0,), (3,)],
    ),
    _area(
        "security",
        "Security incident (ransomware / phishing / compromise)",
        [
            (
                r"ransom(?:ware)?|files (?:are |were |got )?encrypted|encrypted (?:all )?(?:our |"
                r"the )?files|"
                r"ransom note|\.locked\b|\.encrypted\b",
                6,
            ),
            (
                r"phish(?:ing)?|suspicious (?:e-?mail|link|log ?in|sign-?in)|"
                r"clicked (?:on )?(?:a |the )?(?:link|attachment)",
                5,
            ),
            (
                r"compromis(?:e|ed)|hacked|breach|malware|virus|trojan|infected|"
                r"(?:defender|edr|sentinelone|crowdstrike|huntress) (?:alert|detected|flagged)",
                4,
            ),
            (
                r"mfa fatigue|impossible travel|inbox rules?|forwarding rules?|"
                r"sent (?:spam|e-?mails?) to (?:all|everyone)",
                4,
            ),
            (r"unknown (?:admin|user|account)|new admin account|brute[- ]?force|failed logons", 3),
        ],
        [
            (
                "An account is compromised through phished credentials: expect malicious "
                "inbox/forwarding rules and sign-ins from unusual locations.",
                r"phish|clicked|credential|sign-?in|inbox rules?|forward|spam|mfa|"
                r"impossible travel|mailbox",
            ),
            (
                "Ransomware ran on a machine with access to the shares; encrypted files and "
                "ransom notes spread from that host.",
                r"ransom|encrypt|\.locked|decrypt|note|shares?",
            ),
            (
                "Malware on an endpoint (from a download or attachment) persists and may move "
                "laterally.",
                r"malware|virus|trojan|infected|\bedr\b|defender|detected|download|attachment",
            ),
            (
                "Exposed remote access (RDP, or VPN without MFA) is being brute-forced.",
                r"\brdp\b|brute|4625|failed logons|\bvpn\b|exposed|3389",
            ),
        ],
        [
            (
                "Contain first: isolate the affected machines from the network (EDR isolation "
                "or unplug; don't power off a machine that is encrypting, to keep evidence).",
                r"isolat\w*|unplugg\w*|disconnected (?:it|the (?:pc|machine|laptop|server))",
            ),
            (
                "Disable or reset the affected accounts, revoke their sessions (Entra ID: "
                "Revoke sessions) and require MFA re-registration.",
                r"reset\w*\s+(?:the\s+|their\s+|his\s+|her\s+)?passwords?|passwords?\s+(?:was\s+|"
                r"were\s+)?reset|revok\w*|disabled (?:the )?accounts?",
            ),
            (
                "Read the Entra ID sign-in logs and the unified audit log for the accounts, "
                "and remove malicious inbox/forwarding rules (`Get-InboxRule -Mailbox <user>`).",
                r"sign-?in logs?|audit logs?|inbox rules?",
            ),
            (
                "Establish the scope: which hosts and shares have encrypted or new files, when "
                "they first appeared, and which host wrote them first.",
                None,
            ),
            (
                "Confirm offline or immutable backups are intact before any restore, and "
                "bring in the client's incident-response contact and cyber insurer.",
                r"checked (?:the )?backups?|backups? (?:are|is) (?:ok|fine|intact|clean)",
            ),
        ],
        checks=[(), (0, 3), (0,), (1,), (1,)],
    ),
)

AREAS_BY_KEY = {area.key: area for area in AREAS}

GENERIC_CAUSES = (
    "Not enough detail yet to point at one component: the endpoint, the network and the "
    "service the user is trying to reach are all still candidates.",
    "A recent change (an update, a password change, a new device or a configuration "
    "change) is the usual trigger; when it last worked narrows it down.",
    "The scope is unknown: whether one user, one site or everyone is affected decides "
    "where to look next.",
)

GENERIC_STEPS = (
    Step(
        "Establish scope and timeline: who is affected (one user, a group, everyone), since "
        "when, and what changed just before.",
        None,
    ),
    Step(
        "Reproduce the problem and capture the exact error message or code (a screenshot) "
        "and the time it happened.",
        None,
    ),
    Step(
        "Read the System and Application logs in Event Viewer on the affected machine around "
        "that time.",
        _rx(r"event (?:viewer|logs?)"),
    ),
    Step(
        "Test as another user, on another device and from another network to isolate whether "
        "it's the user, the machine or the service.",
        _rx(r"(?:another|different|other) (?:user|pc|computer|device|machine|network|laptop)"),
    ),
    Step(
        "Restart the affected application or service (and the machine, if safe) and note "
        "whether the problem comes back.",
        _rx(r"\bre-?boot\w*|\brestart\w*|power[- ]cycl\w*"),
    ),
)

# Windows, NT status and Office error codes whose meaning points at an area.
KNOWN_CODES: dict[str, tuple[str, str]] = {
    "0x80070005": ("permissions", "access denied"),
    "0x80004005": ("permissions", "unspecified error, often access or share related"),
    "0x80070070": ("disk", "not enough disk space"),
    "0x80070027": ("disk", "disk full"),
    "0x800f0922": ("updates_boot", "update failed: reserved partition too small or no connection"),
    "0x800f081f": ("updates_boot", "component store source files missing"),
    "0x80073712": ("updates_boot", "component store corrupt"),
    "0x80070643": ("updates_boot", "update installation failed"),
    "0x8024402c": ("updates_boot", "update server name could not be resolved"),
    "0x0000007b": ("updates_boot", "INACCESSIBLE_BOOT_DEVICE"),
    "0x000000ef": ("updates_boot", "CRITICAL_PROCESS_DIED"),
    "0x80072ee7": ("dns", "server name could not be resolved"),
    "0x80072efe": ("network", "connection to the server was interrupted"),
    "0x80072ee2": ("network", "connection timed out"),
    "0x80070035": ("network", "network path not found"),
    "0x80070043": ("network", "network name cannot be found"),
    "0x800704cf": ("network", "network location cannot be reached"),
    "0xc000006a": ("ad_auth", "wrong password"),
    "0xc0000234": ("ad_auth", "account locked out"),
    "0xc0000071": ("ad_auth", "password expired"),
    "0xc0000224": ("ad_auth", "password must be changed"),
    "0xc0000072": ("ad_auth", "account disabled"),
    "0xc0000193": ("ad_auth", "account expired"),
    "0xc0000064": ("ad_auth", "user name does not exist"),
    "0xc0000133": ("ad_auth", "clock differs from the domain controller's"),
    "0xc000018d": ("ad_auth", "trust relationship failed"),
    "0x0000011b": ("printing", "printer connection blocked by print spooler hardening"),
    "0x00000709": ("printing", "printer connection or default printer error"),
    "0x0000007c": ("printing", "printer connection failed"),
    "0x8004010f": ("m365_mail", "Outlook data file or offline address book not accessible"),
    "0x800ccc0e": ("m365_mail", "Outlook cannot connect to the mail server"),
    "0x800ccc0f": ("m365_mail", "connection to the mail server was interrupted"),
    "0x80040115": ("m365_mail", "Outlook cannot reach Exchange"),
    "0x80090016": ("m365_mail", "keyset does not exist (Office sign-in token storage)"),
    "0x800423f3": ("backup", "VSS writer failed (retryable)"),
    "0x800423f4": ("backup", "VSS writer failed (non-retryable)"),
    "0x80042306": ("backup", "shadow copy provider vetoed the snapshot"),
}

# Event IDs whose meaning points at an area.
KNOWN_EVENTS: dict[str, tuple[str, str]] = {
    "4740": ("ad_auth", "account locked out"),
    "4625": ("ad_auth", "failed logon"),
    "4771": ("ad_auth", "Kerberos pre-authentication failed"),
    "4776": ("ad_auth", "NTLM credential validation"),
    "5719": ("ad_auth", "no domain controller available"),
    "3210": ("ad_auth", "secure channel to the domain failed"),
    "1129": ("ad_auth", "Group Policy could not reach a domain controller"),
    "1014": ("dns", "DNS name resolution timed out"),
    "4013": ("dns", "DNS server waiting for directory sync"),
    "4199": ("dhcp", "IP address conflict"),
    "1063": ("dhcp", "DHCP scope out of addresses"),
    "1020": ("dhcp", "DHCP scope almost full"),
    "41": ("updates_boot", "unexpected restart (Kernel-Power)"),
    "1001": ("updates_boot", "bugcheck"),
    "6008": ("updates_boot", "unexpected shutdown"),
    "7": ("updates_boot", "bad block on disk"),
    "55": ("updates_boot", "file system corruption"),
    "2013": ("disk", "low disk space"),
    "36874": ("certs", "TLS handshake: no shared protocol or cipher"),
    "36887": ("certs", "fatal TLS alert received"),
    "36888": ("certs", "fatal TLS alert generated"),
    "8193": ("backup", "VSS error"),
    "12289": ("backup", "VSS error"),
    "4202": ("network", "network adapter disconnected"),
    "4227": ("network", "TCP/IP ports exhausted"),
    "2019": ("performance", "nonpaged memory pool exhausted"),
    "2020": ("performance", "paged memory pool exhausted"),
}

CODE_WEIGHT = 4.0
EVENT_WEIGHT = 3.0

_HEX_CODE = _rx(r"\b0x[0-9a-f]{8}\b")
_EVENT_ID = _rx(r"\b(?:events?\s*(?:ids?|#)?|eventid|eid)\s*[:#]?\s*(\d{1,5})\b")
# Security-log IDs are often quoted bare ("a flood of 4740s").
_BARE_SECURITY_EVENT = _rx(r"\b(47\d\d|46\d\d)s?\b")
_KB = _rx(r"\bkb\d{6,7}\b")
_ERROR_NAME = re.compile(r"\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+){2,}\b")
_SMTP_STATUS = _rx(r"(?<![\d.])([45]\.[1-7]\.\d{1,3})(?!\.?\d)")
# Enhanced status codes only mean something when the case is about mail delivery.
_MAIL_CONTEXT = _rx(r"ndr|bounc|undeliverable|smtp|delivery|reject|\b5[05]\d\b")
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|"
    r"[1-9]?\d)(?!\.?\d)"
)
_PORT = _rx(r"\b(?:port|tcp|udp)\s*[:/]?\s*(\d{2,5})\b|\b(\d{2,5})/(?:tcp|udp)\b")
_EMAIL_DOMAIN = _rx(r"[\w.+-]+@((?:[a-z0-9-]+\.)+[a-z]{2,24})\b")
_FQDN = _rx(r"(?<![@\w.-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})\b(?![.-]?\w)")
_UNC_HOST = _rx(r"\\\\([a-z0-9][a-z0-9.-]*)\\")
_NAMED_HOST = _rx(
    r"\b(?:server|host|hostname|pc|computer|machine|laptop|workstation|dc|nas)\s+"
    r"(?:called\s+|named\s+)?([a-z][a-z0-9-]*\d[a-z0-9-]*)\b"
)
# Upper-case names with a digit (DC01, SRV-FS02) are how MSPs name machines.
_SHOUTED_HOST = re.compile(r"\b(?=[A-Z0-9-]*\d)[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*\b")
_NOT_A_HOST = re.compile(
    r"^(?:KB\d+|CVE-.*|RFC-?\d+|(?:TLS|SSL|SMB|SHA|MD|HTTP|HTTPS|IPV|X|WIN|W|M|O|AES|RC|ISO|USB|MS|"
    r"PCIE|DDR|WPA|IKEV|SNMPV|NTLMV|TLSV|SSLV|SQL|E|P|A|G|H|R|S|V|COVID|IE|OS|WS)[0-9.]*|B2[BC])$"
)
# Names ending like files (outlook.exe, report.pdf) are not hosts.
_FILE_SUFFIXES = frozenset(
    {
        "exe", "dll", "msi", "msu", "txt", "log", "ps1", "psm1", "bat", "cmd", "vbs", "js", "py",
        "sh", "pst", "ost", "doc", "docx", "xls", "xlsx", "xlsm", "ppt", "pptx", "pdf", "csv",
        "zip", "rar", "7z", "png", "jpg", "jpeg", "gif", "bmp", "json", "xml", "ini", "cfg", "conf",
        "config", "sys", "evtx", "etl", "dmp", "html", "htm", "php", "aspx", "lnk", "iso", "vhd",
        "vhdx", "vmdk", "bak", "tmp", "old", "eml", "msg", "rdp", "inf", "cab", "mui",
    }
)

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|[\r\n]+|;\s*")
_TRIED = _rx(
    r"\b(?:tried|trying|already|attempted|did(?!n'?t|\s+not)|ran|re-?ran|rebooted|restarted|"
    r"re-?installed|flushed|cleared|reset|replaced|updated|removed|deleted|disabled|re-?enabled|"
    r"re-?created|"
    r"rebuilt|re-?joined|checked|verified|confirmed|swapped|rolled back|uninstalled|unlocked|"
    r"renewed|released|repaired|recycled|power[- ]cycled|no luck|no change|no difference|"
    r"same (?:result|error)|didn'?t (?:help|work|fix)|did not (?:help|work|fix))\b"
)
_NOT_DONE = _rx(
    r"\b(?:haven'?t|have not|hasn'?t|has not|not yet|didn'?t (?:try|get)|did not (?:try|get)|"
    r"won'?t|will|i'll|we'll|going to|plan(?:ning)? to|next|should (?:i|we)|could (?:i|we)|"
    r"can (?:i|we)|shall (?:i|we)|do (?:i|we) need|needs? to|please)\b"
)

# Canonical names for what engineers usually say they tried, for the summary.
TRIED_ACTIONS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (label, _rx(pattern))
    for label, pattern in (
        ("restarted the print spooler", r"spool"),
        (
            "flushed DNS",
            r"flush\w*\s+(?:the\s+)?(?:dns|cache)|flushdns|(?:dns|cache)\s+(?:was\s+)?flushed",
        ),
        ("renewed the IP lease", r"ipconfig /renew|renew\w*\s+(?:the\s+)?(?:ip|lease)"),
        (
            "reset the password",
            r"reset\w*\s+(?:the\s+|their\s+|his\s+|her\s+|user'?s\s+)?password|"
            r"password\s+(?:was\s+|has been\s+)?reset",
        ),
        ("unlocked the account", r"unlock"),
        (
            "recreated the Outlook profile",
            r"(?:new|re-?creat\w*|rebuil\w*|fresh)\s+(?:an?\s+|the\s+)?(?:outlook\s+)?profile",
        ),
        (
            "repaired Office",
            r"(?:repair\w*|re-?install\w*)\s+(?:ms\s+|microsoft\s+)?office|(?:quick|online) repair",
        ),
        (
            "reinstalled the driver",
            r"(?:re-?install\w*|updat\w*|roll\w* back)\s+(?:the\s+)?(?:\w+\s+)?driver",
        ),
        (
            "cleaned up disk space",
            r"disk cleanup|cleanmgr|(?:clear\w*|delet\w*|empt\w*|remov\w*|purg\w*)\s+(?:the\s+|"
            r"all\s+|old\s+)*(?:\w+\s+)?(?:temp|tmp|logs?)\b",
        ),
        ("ran sfc/DISM", r"\bsfc\b|\bdism\b"),
        ("ran gpupdate", r"gpupdate"),
        (
            "checked/cleared saved credentials",
            r"credential manager|(?:clear\w*|remov\w*|delet\w*)\s+(?:the\s+|saved\s+|cached\s+|"
            r"stored\s+)*credentials",
        ),
        (
            "reinstalled the VPN client",
            r"re-?install\w*\s+(?:the\s+)?(?:vpn|anyconnect|globalprotect|forticlient)",
        ),
        ("ran ping/traceroute", r"\bping\w*|tracert|traceroute|pathping"),
        ("checked the event logs", r"event (?:viewer|logs?)"),
        ("rejoined the domain", r"re-?join\w*|test-computersecurechannel"),
        (
            "swapped the cable/port",
            r"(?:swapp?\w*|replac\w*|chang\w*)\s+(?:the\s+|a\s+)?(?:\w+\s+)?(?:cable|port)",
        ),
        ("renewed the certificate", r"renew\w*\s+(?:the\s+)?(?:ssl\s+|tls\s+)?cert"),
        ("re-ran the backup", r"(?:re-?ran|re-?run|retr(?:ied|y)|ran)\s+(?:the\s+)?(?:backup|job)"),
        (
            "rebooted",
            r"\bre-?boot\w*|\brestart\w*\s+(?:the\s+|their\s+|his\s+|her\s+)?(?:pc|computer|"
            r"machine|laptop|server|workstation|device|desktop)|power[- ]cycl\w*",
        ),
    )
)


@dataclass(frozen=True)
class Facts:
    """Concrete details quoted in the case."""

    codes: tuple[str, ...]
    events: tuple[str, ...]
    error_names: tuple[str, ...]
    kbs: tuple[str, ...]
    smtp_statuses: tuple[str, ...]
    hosts: tuple[str, ...]
    ips: tuple[str, ...]
    ports: tuple[str, ...]
    domains: tuple[str, ...]

    def any(self) -> bool:
        """Whether the case quotes anything concrete."""
        quoted = (self.codes, self.events, self.error_names, self.kbs, self.smtp_statuses)
        return any(quoted) or bool(self.hosts or self.ips)


class HeuristicProvider(AssessmentProvider):
    """Rule-based assessment that needs no network: same case, same assessment."""

    name = "heuristic"

    def assess(self, case: dict) -> Assessment:
        """Assess the case from its problem, escalation note and transcript."""
        return assess_case(case)


def assess_case(case: dict) -> Assessment:
    """The rule-based assessment of one case."""
    text = _CaseText.from_case(case)
    facts = extract_facts(text.engineer)
    tried = tried_sentences(text.engineer)
    tried_text = "\n".join(tried)

    scores = _score_areas(text, facts)
    ranked = sorted(
        (key for key, score in scores.items() if score > 0),
        key=lambda key: (-scores[key], _AREA_ORDER[key]),
    )
    top_score = scores[ranked[0]] if ranked else 0.0
    matched = [
        AREAS_BY_KEY[key]
        for key in ranked
        if scores[key] >= MIN_AREA_SCORE and scores[key] >= 0.35 * top_score
    ][:MAX_AREAS]

    placeholders = _placeholders(facts)
    if matched:
        fits = {area.key: _cause_fits(area, scores[area.key], text.everything) for area in matched}
        causes = _rank_causes(matched, fits)
        steps = _plan_steps(matched, fits, tried_text, facts, placeholders)
        confidence = _confidence(matched, scores, facts)
    else:
        causes = list(GENERIC_CAUSES)
        steps = _generic_steps(tried_text, facts, limit=5)
        confidence = round(0.2 + (0.05 if facts.any() else 0.0) + min(top_score, 3.0) / 30, 2)

    summary = _summary(case, matched, facts, tried)
    return Assessment(
        summary=summary,
        likely_causes=causes,
        next_steps=steps,
        confidence=confidence,
        provider=HeuristicProvider.name,
        model=MODEL,
    )


_AREA_ORDER = {area.key: index for index, area in enumerate(AREAS)}


@dataclass(frozen=True)
class _CaseText:
    """The case's text split by who wrote it."""

    engineer: str  # title, problem, note and the engineer's messages
    assistant: str
    everything: str

    @classmethod
    def from_case(cls, case: dict) -> _CaseText:
        engineer_parts = [_field(case, "title"), _field(case, "problem"), _field(case, "note")]
        engineer_messages: list[str] = []
        assistant_parts: list[str] = []
        messages = case.get("messages") or []
        if not isinstance(messages, list):
            messages = []
        budget = MAX_TRANSCRIPT_CHARS
        for message in reversed(messages):
            if budget <= 0:
                break
            if not isinstance(message, dict):
                continue
            content = _clean(message.get("content"), min(MAX_MESSAGE_CHARS, budget))
            budget -= len(content)
            if message.get("role") == "assistant":
                assistant_parts.append(content)
            else:
                engineer_messages.append(content)
        engineer_parts += reversed(engineer_messages)
        assistant_parts.reverse()
        engineer = "\n".join(part for part in engineer_parts if part)
        assistant = "\n".join(part for part in assistant_parts if part)
        return cls(
            engineer=engineer,
            assistant=assistant,
            everything=f"{engineer}\n{assistant}",
        )


def _clean(value: Any, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    # Curly quotes from Word and phones would defeat patterns like "can't".
    return value[:limit].replace("\u2019", "'").replace("\u2018", "'").replace("\u00a0", " ")


def _field(case: dict, name: str) -> str:
    return _clean(case.get(name), MAX_FIELD_CHARS).strip()


def _score_areas(text: _CaseText, facts: Facts) -> dict[str, float]:
    scores: dict[str, float] = {}
    for area in AREAS:
        score = 0.0
        for pattern, weight in area.signals:
            if pattern.search(text.engineer):
                score += weight
            elif pattern.search(text.assistant):
                score += weight * ASSISTANT_WEIGHT
        scores[area.key] = score
    for code in facts.codes:
        if code in KNOWN_CODES:
            key = KNOWN_CODES[code][0]
            # 0x80004005 says little on its own.
            scores[key] += CODE_WEIGHT / 2 if code == "0x80004005" else CODE_WEIGHT
    for event in facts.events:
        if event in KNOWN_EVENTS:
            scores[KNOWN_EVENTS[event][0]] += EVENT_WEIGHT
    return scores


def _hint_hits(pattern: re.Pattern, text: str) -> int:
    found: set[str] = set()
    for match in pattern.finditer(text):
        found.add(match.group(0).lower())
        if len(found) >= 3:
            break
    return len(found)


@dataclass(frozen=True)
class _CauseFit:
    """How well one cause fits the case: its score and how many of its hints appear."""

    score: float
    hints: int


def _cause_fits(area: Area, area_score: float, text: str) -> list[_CauseFit]:
    """How likely each of the area's causes is for this case."""
    fits = []
    for index, cause in enumerate(area.causes):
        hints = _hint_hits(cause.hints, text)
        # Earlier causes are the commoner ones; each hint in the case outweighs about
        # two places of that order.
        score = area_score * (1.0 - 0.12 * index + 0.25 * hints)
        fits.append(_CauseFit(score, hints))
    return fits


def _rank_causes(matched: list[Area], fits: dict[str, list[_CauseFit]]) -> list[str]:
    ranked: list[tuple[float, int, int, int, str]] = []
    for area_rank, area in enumerate(matched):
        for index, cause in enumerate(area.causes):
            fit = fits[area.key][index]
            ranked.append((-fit.score, area_rank, index, fit.hints, cause.text))
    ranked.sort()
    # Beyond the first three, only causes the case itself hints at are worth reading.
    chosen = [text for _, _, _, _, text in ranked[:MIN_CAUSES]]
    chosen += [text for _, _, _, hints, text in ranked[MIN_CAUSES:] if hints]
    return chosen[:MAX_CAUSES]


def _ordered_steps(area: Area, fits: list[_CauseFit]) -> tuple[list[Step], list[Step]]:
    """The area's steps, checks for the likelier causes first: (relevant, spare)."""
    order = sorted(range(len(fits)), key=lambda index: (-fits[index].score, index))
    rank = {cause: position for position, cause in enumerate(order)}
    positions = sorted(
        (min((rank[cause] for cause in step.checks), default=-1), index)
        for index, step in enumerate(area.steps)
    )
    relevant: list[Step] = []
    spare: list[Step] = []
    for _, index in positions:
        step = area.steps[index]
        # A step is worth doing now if it is a first look, or checks one of the two
        # likeliest causes, or a cause the case hints at.
        wanted = not step.checks or any(
            rank[cause] < 2 or fits[cause].hints for cause in step.checks
        )
        (relevant if wanted else spare).append(step)
    return relevant, spare


def _plan_steps(
    matched: list[Area],
    fits: dict[str, list[_CauseFit]],
    tried_text: str,
    facts: Facts,
    placeholders: dict[str, str],
) -> list[str]:
    def open_steps(candidates: list[Step]) -> list[str]:
        return [
            step.text.format_map(placeholders)
            for step in candidates
            if step.done is None or not step.done.search(tried_text)
        ]

    steps: list[str] = []
    spares: list[str] = []
    for area, quota in zip(matched, STEPS_PER_AREA, strict=False):
        relevant, spare = _ordered_steps(area, fits[area.key])
        steps += open_steps(relevant)[:quota]
        spares += open_steps(spare)
    steps += spares[: max(0, FULL_PLAN_STEPS - len(steps))]
    lookup = _code_lookup_step(facts)
    if lookup:
        steps.insert(min(1, len(steps)), lookup)
    if len(steps) < MIN_STEPS:
        extra = _generic_steps(tried_text, facts, limit=5, with_lookup=False)
        steps += extra[: MIN_STEPS - len(steps)]
    return steps[:MAX_STEPS]


def _generic_steps(
    tried_text: str, facts: Facts, *, limit: int, with_lookup: bool = True
) -> list[str]:
    steps = [
        step.text for step in GENERIC_STEPS if step.done is None or not step.done.search(tried_text)
    ][:limit]
    lookup = _code_lookup_step(facts) if with_lookup else None
    if lookup:
        steps.insert(min(2, len(steps)), lookup)
    return steps


def _code_lookup_step(facts: Facts) -> str | None:
    unknown = [code for code in facts.codes if code not in KNOWN_CODES][:3]
    if not unknown:
        return None
    listed = ", ".join(unknown)
    return (
        f"Decode {listed} with `certutil -error {unknown[0]}` on any Windows machine and search "
        "the vendor's knowledge base for it."
    )


def _confidence(matched: list[Area], scores: dict[str, float], facts: Facts) -> float:
    top = scores[matched[0].key]
    confidence = 0.4 + 0.45 * min(top, 16.0) / 16.0
    if len(matched) > 1 and scores[matched[1].key] >= 0.75 * top:
        # Two areas fit about equally well: less sure which one it is.
        confidence -= 0.1
    pointed = [KNOWN_CODES[c][0] for c in facts.codes if c in KNOWN_CODES]
    pointed += [KNOWN_EVENTS[e][0] for e in facts.events if e in KNOWN_EVENTS]
    if matched[0].key in pointed:
        confidence += 0.05
    return round(min(0.9, max(0.4, confidence)), 2)


def _placeholders(facts: Facts) -> dict[str, str]:
    return {
        "host": facts.hosts[0] if facts.hosts else "<host>",
        "ip": facts.ips[0] if facts.ips else "<ip>",
        "port": facts.ports[0] if facts.ports else "<port>",
        "domain": facts.domains[0] if facts.domains else "<domain>",
    }


def _unique(values: list[str], limit: int) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for value in values:
        key = value.lower()
        if key not in seen:
            seen[key] = value
            if len(seen) >= limit:
                break
    return tuple(seen.values())


def extract_facts(text: str) -> Facts:
    """Error codes, event IDs, hosts, addresses and ports quoted in text."""
    codes = _unique([m.group(0).lower() for m in _HEX_CODE.finditer(text)], 6)
    events = [m.group(1) for m in _EVENT_ID.finditer(text)]
    if re.search(r"\bevent|\blogs?\b|security log", text, re.IGNORECASE):
        bare = (m.group(1) for m in _BARE_SECURITY_EVENT.finditer(text))
        events += [event for event in bare if event in KNOWN_EVENTS]
    names = (m.group(0) for m in _ERROR_NAME.finditer(text))
    error_names = [name for name in names if not name.startswith("HKEY_")]
    addresses = (m.group(0) for m in _IPV4.finditer(text))
    ips = [ip for ip in addresses if not ip.startswith(("0.", "255."))]
    ports = [next(g for g in m.groups() if g) for m in _PORT.finditer(text)]
    ports = [port for port in ports if 0 < int(port) < 65536]
    domains = [m.group(1).lower() for m in _EMAIL_DOMAIN.finditer(text)]
    fqdns = [
        name.lower()
        for name in (m.group(1) for m in _FQDN.finditer(text))
        if name.rsplit(".", 1)[-1].lower() not in _FILE_SUFFIXES
    ]
    domains += [".".join(name.split(".")[-2:]) for name in fqdns if name.count(".") >= 1]
    hosts = [m.group(1) for m in _UNC_HOST.finditer(text)]
    hosts += [m.group(1).upper() for m in _NAMED_HOST.finditer(text)]
    hosts += [
        name for name in (m.group(0) for m in _SHOUTED_HOST.finditer(text))
        if len(name) >= 3 and not _NOT_A_HOST.match(name) and not name.startswith("0X")
    ]
    hosts += fqdns
    smtp_statuses = []
    if _MAIL_CONTEXT.search(text):
        smtp_statuses = [m.group(1) for m in _SMTP_STATUS.finditer(text)]
    return Facts(
        codes=codes,
        events=_unique(events, 6),
        error_names=_unique(error_names, 4),
        kbs=_unique([m.group(0).upper() for m in _KB.finditer(text)], 4),
        smtp_statuses=_unique(smtp_statuses, 4),
        hosts=_unique(hosts, 5),
        ips=_unique(ips, 5),
        ports=_unique(ports, 3),
        domains=_unique(domains, 3),
    )


def tried_sentences(text: str) -> list[str]:
    """The sentences in which the engineer says something was already done."""
    found: list[str] = []
    for sentence in _SENTENCE_BREAK.split(text):
        sentence = " ".join(sentence.split())
        if not sentence or sentence.endswith("?"):
            continue
        if _TRIED.search(sentence) and not _NOT_DONE.search(sentence):
            found.append(sentence)
    return found


def tried_actions(tried: list[str]) -> list[str]:
    """What the engineer already tried, named the usual way, in the order first said."""
    firsts: dict[str, int] = {}
    for position, sentence in enumerate(tried):
        for label, pattern in TRIED_ACTIONS:
            if label not in firsts and pattern.search(sentence):
                firsts[label] = position
    order = {label: index for index, (label, _) in enumerate(TRIED_ACTIONS)}
    return sorted(firsts, key=lambda label: (firsts[label], order[label]))


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return f"{cut}…"


def _first_sentence(text: str) -> str:
    for part in _SENTENCE_BREAK.split(text):
        part = " ".join(part.split()).rstrip(".")
        if part:
            return part
    return ""


def _evidence(facts: Facts) -> list[str]:
    items: list[str] = []
    for code in facts.codes:
        meaning = KNOWN_CODES.get(code)
        items.append(f"{code} ({meaning[1]})" if meaning else code)
    for event in facts.events:
        meaning = KNOWN_EVENTS.get(event)
        items.append(f"Event ID {event} ({meaning[1]})" if meaning else f"Event ID {event}")
    items += list(facts.error_names) + list(facts.smtp_statuses) + list(facts.kbs)
    if facts.hosts:
        items.append("host " + ", ".join(facts.hosts[:3]))
    if facts.ips:
        items.append("address " + ", ".join(facts.ips[:3]))
    return items[:6]


def _summary(case: dict, matched: list[Area], facts: Facts, tried: list[str]) -> str:
    client = _shorten(_field(case, "client_name"), 80) or "The client"
    title = _shorten(_field(case, "title"), 120)
    headline = _first_sentence(_field(case, "problem")) or _first_sentence(_field(case, "note"))
    headline = _shorten(headline, 160)
    first = f"{client}: {title or headline or 'no problem description given'}"
    if title and headline and headline.lower().rstrip(".…") != title.lower().rstrip(".…"):
        first += f" ({headline})"
    sentences = [first.rstrip(".") + "."]

    evidence = _evidence(facts)
    if matched:
        second = f"Most likely area: {matched[0].label}"
        if len(matched) > 1:
            second += f", with {matched[1].label} also possible"
    else:
        second = "No common problem pattern was recognised, so it needs hands-on triage"
    if evidence:
        second += "; evidence: " + "; ".join(evidence)
    sentences.append(second + ".")

    actions = tried_actions(tried)
    if actions:
        done = "Already tried: " + ", ".join(actions[:6])
    elif tried:
        done = "Already tried: " + " / ".join(_shorten(sentence, 90) for sentence in tried[:2])
    else:
        done = "Nothing is recorded as tried yet"
    urgency = _shorten(_field(case, "urgency").lower(), 20) or "normal"
    sentences.append(f"{done.rstrip('.…')}; urgency {urgency}.")
    return " ".join(sentences)
