//! Handing out what the system description grants: endpoints, notifications, shared regions,
//! I/O ports, interrupts and device memory.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use sel4::{init, Cap, CapData, CapRights, IrqHandler, ObjectType, VmAttributes};
use sysdesc::{CapKind, IrqSource, System, PAGE_SIZE};

use crate::objects::{align_up, Memory, Object};
use crate::component::{BuildError, Component, Result};

fn find<'a>(components: &'a mut [Component], name: &str) -> Result<&'a mut Component> {
    components
        .iter_mut()
        .find(|c| c.name == name)
        .ok_or_else(|| BuildError(format!("unknown component `{name}`")))
}

pub fn grant_all(system: &System, components: &mut [Component], mem: &mut Memory) -> Result<()> {
    // Endpoints and notifications: one object each, a (badged) copy per holder.
    let mut notifications: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for (channels, ty, kind) in [
        (&system.endpoints, ObjectType::Endpoint, CapKind::Endpoint),
        (&system.notifications, ObjectType::Notification, CapKind::Notification),
    ] {
        for ch in channels {
            let obj = mem.alloc_fixed(ty)?;
            for h in &ch.holders {
                let data = CapData::badge(h.badge)
                    .ok_or_else(|| BuildError(format!("`{}`: badge {} too large", ch.name, h.badge)))?;
                find(components, &h.component)?.grant(&h.name, kind, obj.slot, CapRights::ALL, data, h.badge)?;
                if kind == CapKind::Notification {
                    notifications.insert((h.component.clone(), h.name.clone()), (obj.slot, h.badge));
                }
            }
        }
    }

    // Shared regions: frames mapped into every holder; DMA regions physically contiguous.
    for r in &system.regions {
        let pages = r.size / PAGE_SIZE;
        let (frames, paddr) = if r.dma {
            let bits = 64 - (align_up(r.size, PAGE_SIZE) - 1).leading_zeros() as u64;
            let ut = mem.alloc_untyped(bits.max(12))?;
            let mut frames = Vec::new();
            for i in 0..pages {
                let slot = mem.slots.alloc()?;
                ut.cap::<sel4::Untyped>().retype(ObjectType::X86Page4K as u64, 0, init::CNODE, 0, 0, slot, 1)?;
                frames.push(Object { slot, paddr: ut.paddr + i * PAGE_SIZE });
            }
            (frames, Some(ut.paddr))
        } else {
            let mut frames = Vec::new();
            for _ in 0..pages {
                frames.push(mem.alloc_fixed(ObjectType::X86Page4K)?);
            }
            (frames, None)
        };
        for m in &r.maps {
            find(components, &m.component)?.map_region(mem, &m.name, &frames, m.vaddr, m.writable, VmAttributes::DEFAULT, paddr)?;
        }
    }

    // I/O ports: the initial capability, restricted to the granted range.
    for p in &system.io_ports {
        find(components, &p.component)?.grant(
            &p.name,
            CapKind::IoPort,
            init::IO_PORT.cptr(),
            CapRights::ALL,
            CapData::io_ports(p.first, p.last),
            0,
        )?;
    }

    // Interrupts: a handler delivering to the named notification with the grant's badge.
    for (vector, q) in system.irqs.iter().enumerate() {
        let slot = mem.slots.alloc()?;
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
            IrqSource::Msi { bus, dev, func, handle } => {
                init::IRQ_CONTROL.get_msi(init::CNODE, slot, 64, bus as u64, dev as u64, func as u64, handle, vector as u64)?
            }
        }
        let &(notification, _) = notifications
            .get(&(q.component.clone(), q.notification.clone()))
            .ok_or_else(|| BuildError(format!("irq `{}`: no notification `{}`", q.name, q.notification)))?;
        let badged = mem.slots.alloc()?;
        let data = CapData::badge(q.badge).ok_or_else(|| BuildError(format!("irq `{}`: badge too large", q.name)))?;
        init::CNODE.mint(badged, 64, init::CNODE, notification, 64, CapRights::ALL, data)?;
        let handler: Cap<IrqHandler> = Cap::from_cptr(slot);
        handler.set_notification(Cap::from_cptr(badged))?;
        handler.ack()?;
        find(components, &q.component)?.grant(&q.name, CapKind::IrqHandler, slot, CapRights::ALL, CapData::NONE, 0)?;
    }

    // Device memory, uncached.
    for m in &system.mmio {
        let mut frames = Vec::new();
        for i in 0..m.size / PAGE_SIZE {
            frames.push(mem.device_frame(m.paddr + i * PAGE_SIZE)?);
        }
        find(components, &m.component)?.map_region(mem, &m.name, &frames, None, true, VmAttributes::CACHE_DISABLED, Some(m.paddr))?;
    }
    Ok(())
}
