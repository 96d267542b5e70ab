//! `/etc/resolv.conf` and `/etc/hosts` of a step, generated as BuildKit's OCI executor
//! generates them (`executor/oci/resolvconf.go`, `hosts.go`): the host's resolvers, with
//! loopback ones dropped where the step has a network of its own; `[dns]` overrides; the
//! step's hostname and extra hosts. Both are bind-mounted read-only and never reach a layer.

use std::net::IpAddr;

/// The `[dns]` section of `buildkitd.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// `nameservers`: replace the host's.
    pub nameservers: Vec<String>,
    /// `options`: replace the host's.
    pub options: Vec<String>,
    /// `searchDomains`: replace the host's.
    pub search_domains: Vec<String>,
}

/// Where the host's resolvers are read from.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's upstream list, read instead when the host's only resolver is its
/// stub at 127.0.0.53 (which a step with a network of its own cannot reach).
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// Servers used when none is left (BuildKit's, Google's public DNS).
const FALLBACK: &[&str] = &[
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
];

/// The resolv.conf of a step. `read(path)` reads a host file (missing: empty);
/// `host_network`: the step shares the host's network, so loopback resolvers work.
pub fn resolv_conf(
    dns: &DnsSettings,
    host_network: bool,
    read: impl Fn(&str) -> String,
) -> Result<String, String> {
    let mut source = read(HOST_RESOLV_CONF);
    if !host_network {
        let parsed = Parsed::of(&source);
        if parsed.nameservers == ["127.0.0.53"] {
            tracing::debug!(
                "detected 127.0.0.53 nameserver, assuming systemd-resolved, so using resolv.conf: {SYSTEMD_RESOLV_CONF}"
            );
            source = read(SYSTEMD_RESOLV_CONF);
        }
    }
    let mut conf = Parsed::of(&source);
    let configured = !dns.nameservers.is_empty();
    if configured {
        for ns in &dns.nameservers {
            if ns.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "bad nameserver address: {ns:?} in [dns] nameservers"
                ));
            }
        }
        conf.nameservers = dns.nameservers.clone();
    }
    if !dns.search_domains.is_empty() {
        conf.search = dns
            .search_domains
            .iter()
            .filter(|d| *d != ".")
            .cloned()
            .collect();
    }
    if !dns.options.is_empty() {
        conf.options = dns.options.clone();
    }
    if (!host_network || conf.nameservers.is_empty()) && !configured {
        conf.nameservers
            .retain(|ns| ns.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback()));
        if conf.nameservers.is_empty() {
            tracing::info!(
                "No non-localhost DNS nameservers are left in resolv.conf. Using default external servers"
            );
            conf.nameservers = FALLBACK.iter().map(|s| s.to_string()).collect();
        }
    }
    Ok(conf.render())
}

/// A resolv.conf as BuildKit reads one.
#[derive(Default)]
struct Parsed {
    nameservers: Vec<String>,
    search: Vec<String>,
    options: Vec<String>,
    /// Lines of other kinds, kept as they are.
    other: Vec<String>,
}

impl Parsed {
    fn of(text: &str) -> Self {
        let mut p = Parsed::default();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            let mut words = trimmed.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().filter(|ip| ip.parse::<IpAddr>().is_ok()) {
                        p.nameservers.push(ip.to_string());
                    }
                }
                // The last `search` or `domain` line wins, as in libc.
                Some("search" | "domain") => p.search = words.map(str::to_string).collect(),
                Some("options") => p.options.extend(words.map(str::to_string)),
                _ => p.other.push(line.to_string()),
            }
        }
        p
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        for line in &self.other {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// The hosts file of a step: localhost with its hostname, then each extra host.
pub fn hosts(hostname: &str, extra: &[(String, String)]) -> String {
    let mut out =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra {
        out.push_str(&format!("{ip}\t{host}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &'static str) -> impl Fn(&str) -> String {
        move |path| match path {
            HOST_RESOLV_CONF => host.to_string(),
            SYSTEMD_RESOLV_CONF => "nameserver 10.0.0.53\nsearch corp\n".to_string(),
            _ => String::new(),
        }
    }

    const GOOGLE: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\nnameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n";

    #[test]
    fn loopback_resolvers_are_dropped_only_where_a_step_has_its_own_network() {
        let none = DnsSettings::default();
        let host = with_host("nameserver 127.0.0.1\n");
        assert_eq!(resolv_conf(&none, false, &host).unwrap(), GOOGLE);
        assert_eq!(
            resolv_conf(&none, true, &host).unwrap(),
            "nameserver 127.0.0.1\n"
        );
        let mixed = with_host(
            "# comment\nnameserver 127.0.0.11\nnameserver 192.168.65.5\noptions ndots:0\n",
        );
        assert_eq!(
            resolv_conf(&none, false, &mixed).unwrap(),
            "nameserver 192.168.65.5\noptions ndots:0\n"
        );
        let only_loopback = with_host("nameserver 127.0.0.11\noptions ndots:0\n");
        assert_eq!(
            resolv_conf(&none, false, &only_loopback).unwrap(),
            format!("{GOOGLE}options ndots:0\n")
        );
        // IPv6 servers stay; ::1 is loopback.
        let v6 = with_host("nameserver ::1\nnameserver fd00::53\n");
        assert_eq!(
            resolv_conf(&none, false, &v6).unwrap(),
            "nameserver fd00::53\n"
        );
        // No resolv.conf at all: Google's, in every mode.
        assert_eq!(resolv_conf(&none, true, with_host("")).unwrap(), GOOGLE);
    }

    #[test]
    fn systemd_resolved_stub_reads_its_upstream_list() {
        let none = DnsSettings::default();
        let stub = with_host("nameserver 127.0.0.53\noptions edns0\n");
        assert_eq!(
            resolv_conf(&none, false, &stub).unwrap(),
            "nameserver 10.0.0.53\nsearch corp\n"
        );
        assert_eq!(
            resolv_conf(&none, true, &stub).unwrap(),
            "nameserver 127.0.0.53\noptions edns0\n"
        );
    }

    #[test]
    fn dns_settings_override_and_keep_their_loopback_servers() {
        let dns = DnsSettings {
            nameservers: vec!["127.0.0.2".into(), "10.99.99.53".into()],
            options: vec!["ndots:1".into()],
            search_domains: vec!["buildwit.test".into(), ".".into()],
        };
        let host = with_host(
            "nameserver 10.0.0.1\nsearch a b\ndomain c\noptions rotate\nsortlist 1.2.3.4\n",
        );
        assert_eq!(
            resolv_conf(&dns, false, &host).unwrap(),
            "nameserver 127.0.0.2\nnameserver 10.99.99.53\nsearch buildwit.test\noptions ndots:1\nsortlist 1.2.3.4\n"
        );
        let bad = DnsSettings {
            nameservers: vec!["not-an-ip".into()],
            ..Default::default()
        };
        assert!(
            resolv_conf(&bad, false, &host)
                .unwrap_err()
                .contains("bad nameserver address")
        );
        // The last search/domain line wins.
        assert_eq!(
            resolv_conf(&DnsSettings::default(), true, &host).unwrap(),
            "nameserver 10.0.0.1\nsearch c\noptions rotate\nsortlist 1.2.3.4\n"
        );
    }

    #[test]
    fn hosts_name_the_step_and_its_extra_hosts() {
        assert_eq!(
            hosts(
                "buildkitsandbox",
                &[("myhost".into(), "10.99.99.80".into())]
            ),
            "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n10.99.99.80\tmyhost\n"
        );
    }
}
