//! Parsing and validating `system.toml` (host only).
//!
//! Every problem is reported, not just the first, each naming the item it is about, so that a
//! broken description is fixed in one pass and nothing boots with it.

use super::*;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::ToString;
use std::fmt;
#[cfg(test)]
use alloc::vec;

/// One problem found in a system description.
#[derive(Clone, Debug, PartialEq)]
pub struct DescError(pub String);

impl fmt::Display for DescError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DescError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    #[serde(default)]
    component: Vec<RawComponent>,
    #[serde(default)]
    endpoint: Vec<RawChannel>,
    #[serde(default)]
    notification: Vec<RawChannel>,
    #[serde(default)]
    region: Vec<RawRegion>,
    #[serde(default)]
    io_port: Vec<IoPortGrant>,
    #[serde(default)]
    irq: Vec<RawIrq>,
    #[serde(default)]
    mmio: Vec<MmioGrant>,
    #[serde(default)]
    supervisor: RawSupervisor,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    #[serde(default)]
    control_serial: bool,
    restart_log: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    notification: String,
    badge: u64,
    timeout_ms: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReporter {
    component: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: String,
    package: Option<String>,
    bin: Option<String>,
    priority: u8,
    #[serde(default)]
    core: u8,
    #[serde(default = "default_stack")]
    stack_size: u64,
    #[serde(default = "default_heap")]
    heap_size: u64,
    #[serde(default)]
    threads: Vec<RawThread>,
    #[serde(default)]
    restart: bool,
    #[serde(default)]
    config: std::collections::BTreeMap<String, String>,
    heartbeat: Option<RawHeartbeat>,
    #[serde(default)]
    reported_by: Vec<RawReporter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThread {
    name: String,
    priority: u8,
    #[serde(default)]
    core: u8,
    #[serde(default = "default_stack")]
    stack_size: u64,
}

fn default_stack() -> u64 {
    64 * 1024
}
fn default_heap() -> u64 {
    1024 * 1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: String,
    holders: Vec<RawHolder>,
    death_notices: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHolder {
    component: String,
    #[serde(default)]
    badge: u64,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: String,
    size: u64,
    #[serde(default)]
    dma: bool,
    maps: Vec<RawMapping>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    component: String,
    name: Option<String>,
    #[serde(default = "yes")]
    writable: bool,
    vaddr: Option<u64>,
    /// The least size this component needs the region to be.
    min_size: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIrq {
    component: String,
    name: String,
    ioapic_pin: Option<u8>,
    #[serde(default)]
    level: bool,
    #[serde(default)]
    active_low: bool,
    msi: Option<RawMsi>,
    notification: String,
    #[serde(default)]
    badge: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMsi {
    bus: u8,
    dev: u8,
    func: u8,
    #[serde(default)]
    handle: u64,
}

/// Parse and validate a system description. `max_cores` is the number of cores of the largest
/// kernel the system is built for. Returns every problem found.
pub fn parse(text: &str, max_cores: u8) -> Result<System, Vec<DescError>> {
    let raw: RawSystem =
        toml::from_str(text).map_err(|e| alloc::vec![DescError(format!("system description: {e}"))])?;
    let mut errors = Vec::new();
    let mut err = |msg: String| errors.push(DescError(msg));

    // Components.
    let mut names = BTreeSet::new();
    let mut components = Vec::new();
    for c in raw.component {
        if !names.insert(c.name.clone()) {
            err(format!("component `{}` is declared twice", c.name));
        }
        if c.priority == 255 {
            err(format!("component `{}`: priority 255 is the root task's; use 0..=254", c.name));
        }
        if c.threads.len() + 1 > MAX_THREADS {
            err(format!("component `{}`: {} threads, at most {} fit", c.name, c.threads.len() + 1, MAX_THREADS));
        }
        let mut thread_names = BTreeSet::new();
        for t in &c.threads {
            if !thread_names.insert(t.name.clone()) {
                err(format!("component `{}`: thread `{}` is declared twice", c.name, t.name));
            }
            if t.priority == 255 {
                err(format!("component `{}` thread `{}`: priority 255 is the root task's", c.name, t.name));
            }
            if t.core >= max_cores {
                err(format!("component `{}` thread `{}`: core {} does not exist (cores: {max_cores})", c.name, t.name, t.core));
            }
            check_stack(&mut err, &c.name, &t.name, t.stack_size);
        }
        if c.core >= max_cores {
            err(format!("component `{}`: core {} does not exist (cores: {max_cores})", c.name, c.core));
        }
        check_stack(&mut err, &c.name, "main", c.stack_size);
        if c.heap_size > 0x4000_0000 {
            err(format!("component `{}`: heap of {} bytes is larger than 1 GiB", c.name, c.heap_size));
        }
        let bin = c.bin.unwrap_or_else(|| c.name.clone());
        components.push(Component {
            package: c.package.unwrap_or_else(|| bin.clone()),
            bin,
            name: c.name,
            priority: c.priority,
            core: c.core,
            stack_size: page_round_up(c.stack_size),
            heap_size: page_round_up(c.heap_size),
            threads: c
                .threads
                .into_iter()
                .map(|t| Thread { name: t.name, priority: t.priority, core: t.core, stack_size: page_round_up(t.stack_size) })
                .collect(),
            restart: c.restart,
            config: c.config.into_iter().collect(),
            heartbeat: c.heartbeat.map(|h| Heartbeat { notification: h.notification, badge: h.badge, timeout_ms: h.timeout_ms }),
            reported_by: c
                .reported_by
                .into_iter()
                .map(|r| Holder { component: r.component, badge: 0, name: r.name })
                .collect(),
        });
    }
    let known = |name: &str| names.contains(name);

    // Capability names must be unique within each component.
    let mut cap_names: BTreeSet<(String, String)> = BTreeSet::new();
    let mut claim_cap = |err: &mut dyn FnMut(String), component: &str, name: &str, what: &str| {
        if !cap_names.insert((component.to_string(), name.to_string())) {
            err(format!("component `{component}` is given two capabilities named `{name}` (second: {what})"));
        }
    };

    let mut channels = |kind: &str, raws: Vec<RawChannel>, err: &mut dyn FnMut(String)| -> Vec<Channel> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for ch in raws {
            if !seen.insert(ch.name.clone()) {
                err(format!("{kind} `{}` is declared twice", ch.name));
            }
            if ch.holders.is_empty() {
                err(format!("{kind} `{}` has no holders", ch.name));
            }
            let mut badges = BTreeSet::new();
            let mut holders = Vec::new();
            for h in ch.holders {
                if !known(&h.component) {
                    err(format!("{kind} `{}`: unknown component `{}`", ch.name, h.component));
                }
                if h.badge > MAX_BADGE {
                    err(format!("{kind} `{}`: badge {} does not fit in the kernel's 28 bits", ch.name, h.badge));
                }
                if h.badge != 0 && !badges.insert(h.badge) {
                    err(format!("{kind} `{}`: badge {} is given twice", ch.name, h.badge));
                }
                let name = h.name.unwrap_or_else(|| ch.name.clone());
                claim_cap(err, &h.component, &name, &format!("{kind} `{}`", ch.name));
                holders.push(Holder { component: h.component, badge: h.badge, name });
            }
            // The holder without a badge receives (or waits): two of them could take each
            // other's messages.
            let owners: Vec<&str> = holders.iter().filter(|h| h.badge == 0).map(|h| h.component.as_str()).collect();
            if owners.len() > 1 {
                err(format!(
                    "{kind} `{}`: {} holders without a badge ({}); only one may receive, the others need badges",
                    ch.name,
                    owners.len(),
                    owners.join(", ")
                ));
            }
            out.push(Channel { name: ch.name, holders, death_notices: ch.death_notices });
        }
        out
    };
    let endpoints = channels("endpoint", raw.endpoint, &mut err);
    let notifications = channels("notification", raw.notification, &mut err);

    // Supervision: heartbeats go through a notification the component holds, with a badge of
    // their own; reporters get a capability name of their own.
    for c in &components {
        if let Some(h) = &c.heartbeat {
            let channel = notifications.iter().find(|n| n.holders.iter().any(|x| x.component == c.name && x.name == h.notification));
            match channel {
                None => err(format!("component `{}`: heartbeat names no notification `{}` it holds", c.name, h.notification)),
                Some(ch) if ch.holders.iter().any(|x| x.badge == h.badge) => {
                    err(format!("component `{}`: heartbeat badge {} is also a holder's badge of `{}`", c.name, h.badge, ch.name))
                }
                Some(ch) if ch.holders.iter().any(|x| x.component == c.name && x.name == h.notification && x.badge != 0) => err(format!(
                    "component `{}`: heartbeat notification `{}` must be the one it holds without a badge (it waits on it)",
                    c.name, h.notification
                )),
                Some(_) => {}
            }
            if h.badge == 0 || h.badge > MAX_BADGE {
                err(format!("component `{}`: heartbeat badge {} must be between 1 and {MAX_BADGE}", c.name, h.badge));
            }
            if h.timeout_ms == 0 {
                err(format!("component `{}`: heartbeat timeout_ms must be positive", c.name));
            }
        }
        if !c.reported_by.is_empty() && components.iter().position(|x| x.name == c.name).is_some_and(|i| i >= MAX_REPORTABLE) {
            err(format!(
                "component `{}`: only the first {MAX_REPORTABLE} components can be reported faulty (list it earlier)",
                c.name
            ));
        }
        for r in &c.reported_by {
            if !known(&r.component) {
                err(format!("component `{}`: reported_by names unknown component `{}`", c.name, r.component));
            }
            claim_cap(&mut err, &r.component, &r.name, &format!("reporting `{}` faulty", c.name));
        }
    }

    // Regions and the fixed addresses components ask for.
    let mut region_names = BTreeSet::new();
    let mut region_names_in: BTreeSet<(String, String)> = BTreeSet::new();
    let mut fixed: Vec<(String, String, u64, u64)> = Vec::new();
    let mut regions = Vec::new();
    for r in raw.region {
        if !region_names.insert(r.name.clone()) {
            err(format!("region `{}` is declared twice", r.name));
        }
        if r.size == 0 || r.size % PAGE_SIZE != 0 {
            err(format!("region `{}`: size {} is not a positive multiple of {PAGE_SIZE}", r.name, r.size));
        }
        let mut maps = Vec::new();
        for m in r.maps {
            if !known(&m.component) {
                err(format!("region `{}`: unknown component `{}`", r.name, m.component));
            }
            if let Some(min) = m.min_size {
                if r.size < min {
                    err(format!(
                        "region `{}` is too small for component `{}`: {} bytes, needs at least {min}",
                        r.name, m.component, r.size
                    ));
                }
            }
            let name = m.name.unwrap_or_else(|| r.name.clone());
            if !region_names_in.insert((m.component.clone(), name.clone())) {
                err(format!("component `{}` maps two regions named `{name}`", m.component));
            }
            if let Some(v) = m.vaddr {
                fixed.push((m.component.clone(), r.name.clone(), v, r.size));
            }
            maps.push(Mapping { component: m.component, name, writable: m.writable, vaddr: m.vaddr });
        }
        regions.push(Region { name: r.name, size: r.size, dma: r.dma, maps });
    }
    for (comp, region, v, size) in &fixed {
        if v % PAGE_SIZE != 0 {
            err(format!("region `{region}` in `{comp}`: address {v:#x} is not page aligned"));
        }
        if *v < FIXED_BASE || v.saturating_add(*size) > USER_TOP {
            err(format!(
                "region `{region}` in `{comp}`: {v:#x}..{:#x} is outside the range for fixed addresses {FIXED_BASE:#x}..{USER_TOP:#x} \
                 (below it the root task places regions without an address)",
                v.saturating_add(*size)
            ));
        }
    }
    // What the root task places from MAP_BASE (each followed by an unmapped guard page) must
    // stay below FIXED_BASE.
    let mut placed: BTreeMap<&str, u64> = BTreeMap::new();
    for (comp, size) in regions
        .iter()
        .flat_map(|r| r.maps.iter().filter(|m| m.vaddr.is_none()).map(move |m| (m.component.as_str(), r.size)))
        .chain(raw.mmio.iter().map(|m| (m.component.as_str(), m.size)))
    {
        let used = placed.entry(comp).or_insert(0);
        *used = used.saturating_add(size.saturating_add(PAGE_SIZE));
    }
    for (comp, used) in placed {
        if used > FIXED_BASE - MAP_BASE {
            err(format!("component `{comp}`: {used:#x} bytes of regions without an address do not fit below {FIXED_BASE:#x}"));
        }
    }
    for (i, a) in fixed.iter().enumerate() {
        for b in &fixed[i + 1..] {
            if a.0 == b.0 && a.2 < b.2.saturating_add(b.3) && b.2 < a.2.saturating_add(a.3) {
                err(format!("component `{}`: mappings of regions `{}` and `{}` overlap", a.0, a.1, b.1));
            }
        }
    }

    // Endpoints that share death notices serve one population of clients, named by badge: a
    // badge must name one client across all of them.
    let mut client_badges: BTreeMap<(&str, u64), &str> = BTreeMap::new();
    for ch in &endpoints {
        let Some(r) = ch.death_notices.as_deref() else { continue };
        for h in ch.holders.iter().filter(|h| h.badge != 0) {
            if let Some(other) = client_badges.insert((r, h.badge), h.component.as_str()) {
                if other != h.component {
                    err(format!(
                        "badge {} names both `{other}` and `{}` among the clients of `{r}`'s endpoints",
                        h.badge, h.component
                    ));
                }
            }
        }
    }
    for ch in endpoints.iter().chain(notifications.iter()) {
        if let Some(r) = &ch.death_notices {
            if !region_names.contains(r) {
                err(format!("`{}`: death_notices names no region `{r}`", ch.name));
            }
        }
    }
    for ch in &notifications {
        if ch.death_notices.is_some() {
            err(format!("notification `{}`: death_notices is for endpoints", ch.name));
        }
    }

    // Devices.
    for (i, p) in raw.io_port.iter().enumerate() {
        if !known(&p.component) {
            err(format!("io_port `{}`: unknown component `{}`", p.name, p.component));
        }
        if p.first > p.last {
            err(format!("io_port `{}`: first port {:#x} is above last {:#x}", p.name, p.first, p.last));
        }
        claim_cap(&mut err, &p.component, &p.name, "io_port");
        let mut reserved = alloc::vec![
            (SUPERVISOR_CLOCK_PORTS, "the supervisor's clock (the RTC)"),
            (CONSOLE_SERIAL_PORTS, "the kernel's console (COM1)"),
        ];
        if raw.supervisor.control_serial {
            reserved.push((SUPERVISOR_SERIAL_PORTS, "the supervisor's control channel (COM2)"));
        }
        for ((first, last), what) in reserved {
            if p.first <= last && first <= p.last {
                err(format!("io_port `{}` ({}): ports {first:#x}-{last:#x} are reserved for {what}", p.name, p.component));
            }
        }
        for q in &raw.io_port[i + 1..] {
            if q.component != p.component && p.first <= q.last && q.first <= p.last {
                err(format!(
                    "io_port `{}` ({}) and `{}` ({}) overlap: a device has one owner",
                    p.name, p.component, q.name, q.component
                ));
            }
        }
    }
    let mut irqs = Vec::new();
    for q in raw.irq {
        if !known(&q.component) {
            err(format!("irq `{}`: unknown component `{}`", q.name, q.component));
        }
        let holder = notifications
            .iter()
            .flat_map(|n| n.holders.iter())
            .find(|h| h.component == q.component && h.name == q.notification);
        match holder {
            None => err(format!("irq `{}`: component `{}` holds no notification named `{}`", q.name, q.component, q.notification)),
            Some(h) if h.badge != 0 => err(format!(
                "irq `{}`: notification `{}` must be one `{}` holds without a badge (it waits on it)",
                q.name, q.notification, q.component
            )),
            Some(_) => {}
        }
        claim_cap(&mut err, &q.component, &q.name, "irq");
        let source = match (q.ioapic_pin, q.msi) {
            (Some(pin), None) => {
                if pin > 23 {
                    err(format!("irq `{}`: the IOAPIC has pins 0-23, not {pin}", q.name));
                }
                if pin == SUPERVISOR_CLOCK_PIN {
                    err(format!("irq `{}` ({}): IOAPIC pin {pin} is the supervisor's clock (the RTC)", q.name, q.component));
                }
                IrqSource::IoApic { ioapic: 0, pin, level: q.level, active_low: q.active_low }
            }
            (None, Some(m)) => IrqSource::Msi { bus: m.bus, dev: m.dev, func: m.func, handle: m.handle },
            _ => {
                err(format!("irq `{}`: give exactly one of `ioapic_pin` and `msi`", q.name));
                continue;
            }
        };
        if let Some(other) = irqs.iter().find(|g: &&IrqGrant| same_line(&g.source, &source)) {
            err(format!(
                "irq `{}` ({}) and `{}` ({}) are the same interrupt line: an interrupt has one owner",
                q.name, q.component, other.name, other.component
            ));
        }
        irqs.push(IrqGrant {
            component: q.component,
            name: q.name,
            source,
            notification: q.notification,
            badge: q.badge,
        });
    }
    for (i, m) in raw.mmio.iter().enumerate() {
        for o in &raw.mmio[i + 1..] {
            if m.paddr < o.paddr.saturating_add(o.size) && o.paddr < m.paddr.saturating_add(m.size) {
                err(format!(
                    "mmio `{}` ({}) and `{}` ({}) overlap in physical memory: a device has one owner",
                    m.name, m.component, o.name, o.component
                ));
            }
        }
        if !known(&m.component) {
            err(format!("mmio `{}`: unknown component `{}`", m.name, m.component));
        }
        if m.paddr % PAGE_SIZE != 0 || m.size == 0 || m.size % PAGE_SIZE != 0 {
            err(format!("mmio `{}`: address and size must be page aligned and non-zero", m.name));
        }
        if !region_names_in.insert((m.component.clone(), m.name.clone())) {
            err(format!("component `{}` maps two regions named `{}`", m.component, m.name));
        }
    }

    if let Some(r) = &raw.supervisor.restart_log {
        if !region_names.contains(r) {
            err(format!("supervisor: restart_log names no region `{r}`"));
        }
    }
    // What the supervisor writes for a component to read must not be writable by anyone else.
    let supervisor_written = endpoints
        .iter()
        .chain(notifications.iter())
        .filter_map(|ch| ch.death_notices.as_deref().map(|r| (r, "death notices")))
        .chain(raw.supervisor.restart_log.as_deref().map(|r| (r, "the restart log")));
    for (name, what) in supervisor_written {
        for m in regions.iter().filter(|r| r.name == name).flat_map(|r| r.maps.iter()).filter(|m| m.writable) {
            err(format!("region `{name}` carries {what} from the supervisor: `{}` must map it read-only", m.component));
        }
    }
    let supervisor = Supervisor { control_serial: raw.supervisor.control_serial, restart_log: raw.supervisor.restart_log };

    if errors.is_empty() {
        Ok(System { components, endpoints, notifications, regions, io_ports: raw.io_port, irqs, mmio: raw.mmio, supervisor })
    } else {
        Err(errors)
    }
}

/// Whether two interrupt sources are the same line (an IOAPIC pin, or an MSI vector handle).
fn same_line(a: &IrqSource, b: &IrqSource) -> bool {
    match (a, b) {
        (IrqSource::IoApic { ioapic: x, pin: p, .. }, IrqSource::IoApic { ioapic: y, pin: q, .. }) => x == y && p == q,
        (IrqSource::Msi { handle: x, .. }, IrqSource::Msi { handle: y, .. }) => x == y,
        _ => false,
    }
}

fn check_stack(err: &mut dyn FnMut(String), component: &str, thread: &str, size: u64) {
    if !(PAGE_SIZE..=STACK_SLOT - PAGE_SIZE).contains(&size) {
        err(format!(
            "component `{component}` thread `{thread}`: stack of {size} bytes must be between {PAGE_SIZE} and {}",
            STACK_SLOT - PAGE_SIZE
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [[component]]
        name = "ping"
        priority = 100
        [[component]]
        name = "pong"
        priority = 101
        config = { greeting = "hi", target = "10.0.2.2:7777" }
        threads = [{ name = "w", priority = 100, core = 1 }]
        [[endpoint]]
        name = "pp"
        holders = [{ component = "pong" }, { component = "ping", badge = 7 }]
        [[notification]]
        name = "bell"
        holders = [{ component = "pong" }, { component = "ping", badge = 1 }]
        [[region]]
        name = "shared"
        size = 8192
        maps = [{ component = "ping" }, { component = "pong", writable = false, min_size = 4096 }]
    "#;

    #[test]
    fn good_description_parses() {
        let sys = parse(GOOD, 2).unwrap();
        assert_eq!(sys.components.len(), 2);
        assert_eq!(sys.components[1].threads[0].core, 1);
        assert_eq!(sys.endpoints[0].holders[1].badge, 7);
        assert!(!sys.regions[0].maps[1].writable);
        assert_eq!(sys.components[1].config, vec![("greeting".into(), "hi".into()), ("target".into(), "10.0.2.2:7777".into())]);
    }

    fn errors_of(text: &str) -> Vec<String> {
        parse(text, 2).unwrap_err().into_iter().map(|e| e.0).collect()
    }

    #[test]
    fn supervision_is_parsed_and_checked() {
        // `pong` holds `bell` unbadged; ping holds it with badge 1.
        let text = format!(
            "{GOOD}
            [supervisor]
            control_serial = true
            restart_log = \"log\"
            [[region]]
            name = \"log\"
            size = 4096
            maps = [{{ component = \"pong\", writable = false }}]"
        )
        .replace(
            "name = \"pong\"",
            "name = \"pong\"\n        restart = true\n        heartbeat = { notification = \"bell\", badge = 4, timeout_ms = 100 }\n        reported_by = [{ component = \"ping\", name = \"pong_faulty\" }]",
        );
        let sys = parse(&text, 2).unwrap();
        let pong = sys.components.iter().find(|c| c.name == "pong").unwrap();
        assert_eq!(pong.heartbeat.as_ref().map(|h| (h.badge, h.timeout_ms)), Some((4, 100)));
        assert_eq!(pong.reported_by[0].name, "pong_faulty");
        assert!(sys.supervisor.control_serial);
        assert_eq!(sys.supervisor.restart_log.as_deref(), Some("log"));

        let errs = errors_of(&text.replace("badge = 4", "badge = 1").replace("restart_log = \"log\"", "restart_log = \"nowhere\""));
        assert!(errs.iter().any(|e| e.contains("heartbeat badge 1 is also a holder's badge")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("restart_log names no region `nowhere`")), "{errs:?}");
        let errs = errors_of(&text.replace("name = \"pong_faulty\"", "name = \"bell\""));
        assert!(errs.iter().any(|e| e.contains("two capabilities named `bell`")), "{errs:?}");
        let errs = errors_of(&text.replace("notification = \"bell\"", "notification = \"gong\""));
        assert!(errs.iter().any(|e| e.contains("no notification `gong`")), "{errs:?}");
        // The supervisor's writings are read-only for everyone else.
        let errs = errors_of(&text.replace("restart_log = \"log\"", "restart_log = \"shared\""));
        assert!(errs.iter().any(|e| e.contains("region `shared` carries the restart log from the supervisor: `ping` must map it read-only")), "{errs:?}");
    }

    #[test]
    fn a_badge_names_one_client_across_endpoints_with_shared_death_notices() {
        let text = format!(
            "{GOOD}
            [[component]]
            name = \"third\"
            priority = 90
            [[endpoint]]
            name = \"pp2\"
            death_notices = \"deaths\"
            holders = [{{ component = \"pong\", name = \"pp2\" }}, {{ component = \"third\", badge = 7 }}]
            [[region]]
            name = \"deaths\"
            size = 4096
            maps = [{{ component = \"pong\", writable = false }}]"
        )
        .replace("name = \"pp\"\n", "name = \"pp\"\n        death_notices = \"deaths\"\n");
        let errs = errors_of(&text);
        assert!(errs.iter().any(|e| e.contains("badge 7 names both `ping` and `third`")), "{errs:?}");
        let ok = text.replace("{ component = \"third\", badge = 7 }", "{ component = \"third\", badge = 8 }");
        assert!(parse(&ok, 2).is_ok(), "{:?}", errors_of(&ok));
    }

    #[test]
    fn interrupts_go_to_a_notification_the_holder_waits_on() {
        let irq = |pin: u8, component: &str| {
            format!(
                "{GOOD}
                [[irq]]
                component = \"{component}\"
                name = \"i\"
                ioapic_pin = {pin}
                notification = \"bell\"
                badge = 2"
            )
        };
        assert!(parse(&irq(11, "pong"), 2).is_ok());
        let errs = errors_of(&irq(11, "ping"));
        assert!(errs.iter().any(|e| e.contains("notification `bell` must be one `ping` holds without a badge")), "{errs:?}");
        let errs = errors_of(&irq(30, "pong"));
        assert!(errs.iter().any(|e| e.contains("the IOAPIC has pins 0-23, not 30")), "{errs:?}");
    }

    #[test]
    fn unknown_component_is_named() {
        let text = GOOD.replace("{ component = \"ping\", badge = 7 }", "{ component = \"pnig\", badge = 7 }");
        let errs = errors_of(&text);
        assert!(errs.iter().any(|e| e.contains("unknown component `pnig`")), "{errs:?}");
    }

    #[test]
    fn region_too_small_is_reported() {
        let errs = errors_of(&GOOD.replace("min_size = 4096", "min_size = 16384"));
        assert!(errs.iter().any(|e| e.contains("too small")), "{errs:?}");
    }

    #[test]
    fn overlapping_fixed_mappings_are_reported() {
        let text = format!(
            "{GOOD}
            [[region]]
            name = \"a\"
            size = 8192
            maps = [{{ component = \"ping\", vaddr = 0x10000000000 }}]
            [[region]]
            name = \"b\"
            size = 4096
            maps = [{{ component = \"ping\", vaddr = 0x10000001000 }}]"
        );
        let errs = errors_of(&text);
        assert!(errs.iter().any(|e| e.contains("overlap")), "{errs:?}");
    }

    #[test]
    fn fixed_addresses_cannot_meet_placed_ones() {
        // 0x1_0000_0000 is where the root task places `shared`: a fixed address there is refused.
        let text = format!(
            "{GOOD}
            [[region]]
            name = \"a\"
            size = 4096
            maps = [{{ component = \"ping\", vaddr = 0x100000000 }}]"
        );
        let errs = errors_of(&text);
        assert!(errs.iter().any(|e| e.contains("outside the range for fixed addresses")), "{errs:?}");
        // Placed regions that would run into the fixed range are refused too.
        let text = format!(
            "{GOOD}
            [[region]]
            name = \"huge\"
            size = 0x10000000000
            maps = [{{ component = \"ping\" }}]"
        );
        let errs = errors_of(&text);
        assert!(errs.iter().any(|e| e.contains("do not fit below")), "{errs:?}");
    }

    #[test]
    fn devices_have_one_owner() {
        let text = format!(
            "{GOOD}
            [[mmio]]
            component = \"ping\"
            name = \"bar\"
            paddr = 0xfeb00000
            size = 0x2000
            [[mmio]]
            component = \"pong\"
            name = \"bar2\"
            paddr = 0xfeb01000
            size = 0x1000
            [[irq]]
            component = \"pong\"
            name = \"a\"
            ioapic_pin = 11
            notification = \"bell\"
            badge = 2
            [[irq]]
            component = \"pong\"
            name = \"b\"
            ioapic_pin = 11
            notification = \"bell\"
            badge = 4
            [[io_port]]
            component = \"ping\"
            name = \"com\"
            first = 0x3e8
            last = 0x3ef
            [[io_port]]
            component = \"pong\"
            name = \"com2\"
            first = 0x3e8
            last = 0x3e8"
        );
        let errs = errors_of(&text);
        assert!(errs.iter().any(|e| e.contains("`bar` (ping) and `bar2` (pong) overlap in physical memory")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("irq `b` (pong) and `a` (pong) are the same interrupt line")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("io_port `com` (ping) and `com2` (pong) overlap")), "{errs:?}");
        let errs = errors_of(&text.replace("ioapic_pin = 11\n            notification = \"bell\"\n            badge = 2", "ioapic_pin = 8\n            notification = \"bell\"\n            badge = 2").replace("first = 0x3e8\n            last = 0x3ef", "first = 0x60\n            last = 0x7f"));
        assert!(errs.iter().any(|e| e.contains("irq `a` (pong): IOAPIC pin 8 is the supervisor's clock")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("io_port `com` (ping): ports 0x70-0x71 are reserved for the supervisor's clock")), "{errs:?}");
        // Apart, they are fine.
        let apart = text.replace("paddr = 0xfeb01000", "paddr = 0xfeb02000").replace("ioapic_pin = 11\n            notification = \"bell\"\n            badge = 4", "ioapic_pin = 10\n            notification = \"bell\"\n            badge = 4").replace("first = 0x3e8\n            last = 0x3e8", "first = 0x2e8\n            last = 0x2e8");
        assert!(parse(&apart, 2).is_ok(), "{:?}", errors_of(&apart));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = GOOD
            .replace("size = 8192", "size = 100")
            .replace("core = 1", "core = 5")
            .replace("badge = 1 }", "badge = 1 }, { component = \"nobody\" }");
        let errs = errors_of(&text);
        assert!(errs.len() >= 3, "{errs:?}");
    }

    #[test]
    fn typos_in_keys_are_rejected() {
        let errs = errors_of(&GOOD.replace("priority = 100\n        [[component]]", "prioirty = 100\n        [[component]]"));
        assert!(!errs.is_empty());
    }

    #[test]
    fn one_receiver_per_channel() {
        let errs = errors_of(&GOOD.replace("{ component = \"ping\", badge = 7 }", "{ component = \"ping\" }"));
        assert!(errs.iter().any(|e| e.contains("endpoint `pp`: 2 holders without a badge (pong, ping)")), "{errs:?}");
    }

    #[test]
    fn duplicate_badges_and_cap_names_are_rejected() {
        let text = GOOD.replace("badge = 7", "badge = 0, name = \"bell\"");
        let errs = errors_of(&text);
        assert!(errs.iter().any(|e| e.contains("two capabilities named `bell`")), "{errs:?}");
    }

    #[test]
    fn image_round_trips_and_rejects_garbage() {
        let sys = parse(GOOD, 2).unwrap();
        let image = Image { magic: IMAGE_MAGIC, system: sys, elfs: alloc::vec![Elf { name: "ping", bytes: b"\x7fELF" }] };
        let bytes = image.encode().unwrap();
        assert_eq!(Image::decode(&bytes).unwrap(), image);
        for cut in 0..bytes.len() {
            let _ = Image::decode(&bytes[..cut]);
        }
        let mut bad = bytes.clone();
        bad[0] ^= 0xff;
        assert!(Image::decode(&bad).is_err());
    }
}
