//! Background work that must never take CPU time from requests.
//!
//! [`lower_current_thread`] puts the calling thread in Linux's `SCHED_IDLE` class: it runs only
//! when no normal thread wants the CPU, and a waking request thread preempts it at once. Where
//! that is refused (other systems, restricted containers) the thread gets the lowest normal
//! priority (nice 19) instead.

use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_current_thread_priority,
    set_thread_priority_and_policy, thread_native_id,
};

/// What the calling thread got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowered {
    Idle,
    LowestNormal,
    Unchanged,
}

/// Lowers the calling thread's scheduling priority as far as it goes (see the module docs).
pub fn lower_current_thread() -> Lowered {
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if idle.is_ok() {
        return Lowered::Idle;
    }
    match set_current_thread_priority(ThreadPriority::Min) {
        Ok(()) => Lowered::LowestNormal,
        Err(_) => Lowered::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_lower_itself() {
        let got = std::thread::spawn(lower_current_thread).join().unwrap();
        assert_ne!(got, Lowered::Unchanged);
        #[cfg(target_os = "linux")]
        {
            assert_eq!(got, Lowered::Idle);
        }
    }
}
