//! Extra threads in the component's address space.
//!
//! The root task creates each thread the system description lists (TCB, stack, IPC buffer,
//! priority, core) and leaves it suspended; [`spawn`] gives it code and starts it.

use alloc::boxed::Box;

use sel4::{Cap, Tcb, UserContext};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a thread could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// The system description gives this component no thread of that name.
    NoSuchThread,
    /// The kernel refused to start it.
    Kernel(sel4::Error),
}

/// Starts the thread named `name` (from the system description) running `f`.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
    let info = crate::start_info().ok_or(SpawnError::NoSuchThread)?;
    let (index, entry) = info
        .threads
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == name)
        .ok_or(SpawnError::NoSuchThread)?;
    let job: Box<Job> = Box::new(Box::new(f));
    let job = Box::into_raw(job);
    extern "C" {
        fn __sel4_rt_thread_entry();
    }
    let ctx = UserContext {
        rip: __sel4_rt_thread_entry as *const () as u64,
        rsp: entry.stack_top,
        rflags: 0x202,
        rdi: job as u64,
        rsi: index as u64 + 1,
        rdx: entry.wake,
        ..UserContext::default()
    };
    let tcb: Cap<Tcb> = Cap::from_cptr(entry.tcb);
    tcb.write_registers(true, 0, UserContext::WORDS, &ctx).map_err(|e| {
        // SAFETY: the thread did not start, so the job was not taken: reclaim it.
        drop(unsafe { Box::from_raw(job) });
        SpawnError::Kernel(e)
    })
}

/// First Rust code of an extra thread (called from `__sel4_rt_thread_entry`).
pub(crate) extern "C" fn thread_start(job: *mut Job, index: u64, wake: u64) -> ! {
    crate::sync::register_thread(index as usize, wake);
    // SAFETY: `spawn` passed ownership of this box to the new thread, exactly once.
    let job = unsafe { Box::from_raw(job) };
    job();
    // The thread is done: suspend it for good.
    if let Some(entry) = crate::start_info().and_then(|i| i.threads.get(index as usize - 1)) {
        let _ = Cap::<Tcb>::from_cptr(entry.tcb).suspend();
    }
    crate::fault_now()
}

/// Index of the calling thread (0 = main thread, then the description's order).
pub fn current_index() -> usize {
    sel4::ipc_buffer::user_data() as usize
}
