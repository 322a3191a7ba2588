//! Handing out what the system description grants: endpoints, notifications, shared regions,
//! I/O ports, interrupts and device memory.
//!
//! The objects are created once, from global memory ([`Objects::create`]), so they outlive any
//! one instance of a component; [`grant_to`] gives one component instance its copies, at boot
//! and again after a restart.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use sel4::{init, Cap, CapData, CapRights, IrqHandler, ObjectType, VmAttributes};
use sysdesc::{CapKind, IrqSource, System, PAGE_SIZE};

use crate::component::{BuildError, Component, Result};
use crate::objects::{align_up, Memory, Object};

/// The system's shared objects, by name.
pub struct Objects {
    endpoints: BTreeMap<String, u64>,
    notifications: BTreeMap<String, u64>,
    regions: BTreeMap<String, (Vec<Object>, Option<u64>)>,
    /// Per entry of `System::irqs`: the handler's slot and the badged notification it delivers to.
    irqs: Vec<(u64, u64)>,
    /// Device frames per entry of `System::mmio`.
    mmio: Vec<Vec<Object>>,
    /// The supervisor's own notification (bound to the root task's thread): reporters, the
    /// watchdog clock and nothing else signal it (badges: [`crate::watch`]).
    pub supervisor: u64,
    /// Per component with a heartbeat: its health page and the badged copy of its heartbeat
    /// notification the supervisor pings with. Both outlive the component's instances.
    pub health: BTreeMap<usize, (Object, u64)>,
}

impl Objects {
    /// The first frame of region `name` (for the root task's own writes, e.g. death notices).
    pub fn region_frame(&self, name: &str) -> Option<Cap<sel4::X86Page>> {
        self.regions.get(name).and_then(|(frames, _)| frames.first()).map(|f| f.cap())
    }

    /// The health page of component `index`, if it has a heartbeat.
    pub fn health_frame(&self, index: usize) -> Option<Cap<sel4::X86Page>> {
        self.health.get(&index).map(|(f, _)| f.cap())
    }

    pub fn create(system: &System, mem: &mut Memory) -> Result<Objects> {
        let mut endpoints = BTreeMap::new();
        for ch in &system.endpoints {
            endpoints.insert(ch.name.clone(), mem.alloc_fixed(ObjectType::Endpoint)?.slot);
        }
        let mut notifications = BTreeMap::new();
        for ch in &system.notifications {
            notifications.insert(ch.name.clone(), mem.alloc_fixed(ObjectType::Notification)?.slot);
        }

        // Shared regions; DMA regions physically contiguous.
        let mut regions = BTreeMap::new();
        for r in &system.regions {
            let pages = r.size / PAGE_SIZE;
            let mut frames = Vec::new();
            let paddr = if r.dma {
                let bits = 64 - (align_up(r.size, PAGE_SIZE) - 1).leading_zeros() as u64;
                let ut = mem.alloc_untyped(bits.max(12))?;
                for i in 0..pages {
                    let slot = mem.slot()?;
                    ut.cap::<sel4::Untyped>().retype(ObjectType::X86Page4K as u64, 0, init::CNODE, 0, 0, slot, 1)?;
                    frames.push(Object { slot, paddr: ut.paddr + i * PAGE_SIZE });
                }
                Some(ut.paddr)
            } else {
                for _ in 0..pages {
                    frames.push(mem.alloc_fixed(ObjectType::X86Page4K)?);
                }
                None
            };
            regions.insert(r.name.clone(), (frames, paddr));
        }

        // Interrupts: a handler delivering to the holder's notification with the grant's badge.
        let mut irqs = Vec::new();
        for (vector, q) in system.irqs.iter().enumerate() {
            let slot = mem.slot()?;
            match q.source {
                IrqSource::IoApic { ioapic, pin, level, active_low } => init::IRQ_CONTROL.get_ioapic(
                    init::CNODE,
                    slot,
                    64,
                    ioapic as u64,
                    pin as u64,
                    level as u64,
                    active_low as u64,
                    vector as u64,
                )?,
                IrqSource::Msi { bus, dev, func, handle } => init::IRQ_CONTROL.get_msi(
                    init::CNODE,
                    slot,
                    64,
                    bus as u64,
                    dev as u64,
                    func as u64,
                    handle,
                    vector as u64,
                )?,
            }
            // Which notification object does the holder know by that name?
            let channel = system
                .notifications
                .iter()
                .find(|n| n.holders.iter().any(|h| h.component == q.component && h.name == q.notification))
                .ok_or_else(|| BuildError(format!("irq `{}`: no notification `{}`", q.name, q.notification)))?;
            let notification = notifications[&channel.name];
            let badged = mem.slot()?;
            let data = CapData::badge(q.badge).ok_or_else(|| BuildError(format!("irq `{}`: badge too large", q.name)))?;
            init::CNODE.mint(badged, 64, init::CNODE, notification, 64, CapRights::ALL, data)?;
            let handler: Cap<IrqHandler> = Cap::from_cptr(slot);
            handler.set_notification(Cap::from_cptr(badged))?;
            handler.ack()?;
            irqs.push((slot, badged));
        }

        // Device memory.
        let mut mmio = Vec::new();
        for m in &system.mmio {
            let mut frames = Vec::new();
            for i in 0..m.size / PAGE_SIZE {
                frames.push(mem.device_frame(m.paddr + i * PAGE_SIZE)?);
            }
            mmio.push(frames);
        }
        // Supervision.
        let supervisor = mem.alloc_fixed(ObjectType::Notification)?.slot;
        let mut health = BTreeMap::new();
        for (index, c) in system.components.iter().enumerate() {
            let Some(h) = &c.heartbeat else { continue };
            let channel = system
                .notifications
                .iter()
                .find(|n| n.holders.iter().any(|x| x.component == c.name && x.name == h.notification))
                .ok_or_else(|| BuildError(format!("`{}`: no heartbeat notification `{}`", c.name, h.notification)))?;
            let ping = mem.slot()?;
            let data = CapData::badge(h.badge).ok_or_else(|| BuildError(format!("`{}`: heartbeat badge too large", c.name)))?;
            init::CNODE.mint(ping, 64, init::CNODE, notifications[&channel.name], 64, CapRights::ALL, data)?;
            health.insert(index, (mem.alloc_fixed(ObjectType::X86Page4K)?, ping));
        }
        Ok(Objects { endpoints, notifications, regions, irqs, mmio, supervisor, health })
    }
}

/// The rights a holder of a channel gets. The holder without a badge owns the channel: it
/// receives on the endpoint, or waits on the notification (and may signal it). A holder with a
/// badge only sends: it may call the endpoint (seL4 5.0 gives a caller a reply only through a
/// cap with the grant right) or signal the notification, and can never receive — otherwise a
/// client could wait on the server's endpoint and take other clients' calls and their reply
/// capabilities, or steal the owner's wake-ups.
pub fn holder_rights(kind: CapKind, badge: u64) -> CapRights {
    match (kind, badge) {
        (_, 0) => CapRights::READ_WRITE,
        (CapKind::Endpoint, _) => CapRights::new(true, false, true),
        _ => CapRights::new(false, false, true),
    }
}

/// Gives component `c` every capability and mapping the description grants it.
pub fn grant_to(c: &mut Component, system: &System, objects: &Objects, mem: &mut Memory) -> Result<()> {
    let me = c.name.clone();
    for (channels, table, kind) in [
        (&system.endpoints, &objects.endpoints, CapKind::Endpoint),
        (&system.notifications, &objects.notifications, CapKind::Notification),
    ] {
        for ch in channels {
            for h in ch.holders.iter().filter(|h| h.component == me) {
                let data = CapData::badge(h.badge)
                    .ok_or_else(|| BuildError(format!("`{}`: badge {} too large", ch.name, h.badge)))?;
                c.grant(&h.name, kind, table[&ch.name], holder_rights(kind, h.badge), data, h.badge)?;
            }
        }
    }
    for r in &system.regions {
        let (frames, paddr) = &objects.regions[&r.name];
        for m in r.maps.iter().filter(|m| m.component == me) {
            c.map_region(mem, &m.name, frames, m.vaddr, m.writable, VmAttributes::DEFAULT, *paddr)?;
        }
    }
    // I/O ports: the initial capability, restricted to the granted range.
    for p in system.io_ports.iter().filter(|p| p.component == me) {
        c.grant(&p.name, CapKind::IoPort, init::IO_PORT.cptr(), CapRights::ALL, CapData::io_ports(p.first, p.last), 0)?;
    }
    for (q, &(slot, badged)) in system.irqs.iter().zip(&objects.irqs) {
        if q.component == c.name {
            c.grant(&q.name, CapKind::IrqHandler, slot, CapRights::ALL, CapData::NONE, 0)?;
            // A previous instance may have pointed the interrupt elsewhere (the handler
            // capability lets its holder change the notification, and rights cannot stop that)
            // or died with it masked (taken, not acked): the new one starts as described.
            let handler = Cap::<IrqHandler>::from_cptr(slot);
            handler.set_notification(Cap::from_cptr(badged))?;
            let _ = handler.ack();
        }
    }
    for (m, frames) in system.mmio.iter().zip(&objects.mmio) {
        if m.component == me {
            c.map_region(mem, &m.name, frames, None, true, VmAttributes::CACHE_DISABLED, Some(m.paddr))?;
        }
    }
    // Supervision: my health page; the right to report others faulty.
    if let Some(index) = system.components.iter().position(|d| d.name == me) {
        if let Some((frame, _)) = objects.health.get(&index) {
            let copy = mem.slot()?;
            init::CNODE.copy(copy, 64, init::CNODE, frame.slot, 64, CapRights::ALL)?;
            c.vspace.map(mem, Cap::from_cptr(copy), sysdesc::HEALTH_VADDR, CapRights::READ_WRITE, VmAttributes::DEFAULT)?;
            c.info.health = true;
        }
    }
    for (target, d) in system.components.iter().enumerate() {
        for r in d.reported_by.iter().filter(|r| r.component == me) {
            let badge = crate::watch::report_badge(target)
                .ok_or_else(|| BuildError(format!("`{}`: too many components to be reported faulty", d.name)))?;
            let data = CapData::badge(badge).ok_or_else(|| BuildError("report badge too large".into()))?;
            // Signal only: a reporter must not be able to wait on (and steal) the supervisor's signals.
            c.grant(&r.name, CapKind::Notification, objects.supervisor, CapRights::new(false, false, true), data, badge)?;
        }
    }
    Ok(())
}
