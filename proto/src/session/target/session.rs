//! What a target connection shares with the other connections of its
//! session (RFC 7143 §4.2.2.1: "CmdSN ... is maintained per session";
//! §11.2.1.8: the ITT is unique per session) and with Task Management,
//! which may act on tasks of any connection (§11.5).
//!
//! The shell implements [`TargetSession`] over its own session table (its
//! locks, its task handles); [`LocalSession`] is the one-connection version
//! for tests and test peers.

use std::cell::{RefCell, RefMut};

use crate::serial::CmdSn;
use crate::session::tags::TagMap;
use crate::session::{Admit, CmdWindow};

/// Identifies a registered task, so that a reused ITT never names an old,
/// aborted task.
pub type TaskId = u64;

/// A SCSI task about to be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewTask {
    pub itt: u32,
    pub lun: u64,
    pub cmd_sn: CmdSn,
    /// Whether it holds a CmdSN window slot (non-immediate).
    pub counted: bool,
}

/// Why a task could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The ITT names a task that is still active (§11.17.1 Reject
    /// "Task in progress").
    TaskInProgress,
    /// Too many immediate commands (§11.17.1 Reject "Immediate command
    /// reject - too many immediate commands").
    TooManyImmediate,
    /// The session is closing: drop the command silently.
    Closed,
}

/// The session-wide state a connection core works with.
pub trait TargetSession {
    /// CmdSN window admission (§4.2.2.1; [`CmdWindow::admit`]).
    fn admit(&self, cmd_sn: CmdSn, immediate: bool) -> Admit;
    /// (ExpCmdSN, MaxCmdSN) to stamp into a PDU being sent now.
    fn window(&self) -> (CmdSn, CmdSn);
    /// A counted non-SCSI request (NOP-Out, Text, Logout, TMF) or a refused
    /// command was answered: free its window slot.
    fn release_slot(&self);
    /// Register a SCSI task in the session's task table.
    fn register_task(&self, task: &NewTask) -> Result<TaskId, Refusal>;
    /// Whether the task was aborted (by a TMF, a reset, the session's end).
    fn is_aborted(&self, itt: u32, id: TaskId) -> bool;
    /// The task is about to be answered (or dropped): remove it from the
    /// table and free its window slot, so the answer already advertises
    /// the freed slot. False when it was aborted: then send nothing
    /// (§4.2.3.3: no response for an aborted task).
    fn retire_task(&self, itt: u32, id: TaskId) -> bool;
    /// Whether the LU wants descriptor-format sense (SPC-5 §7.5.8
    /// D_SENSE), for the CHECK CONDITIONs the transport builds itself.
    fn descriptor_sense(&self, lun: u64) -> bool;
}

/// A session shared by its connections through a pointer (`Arc` in the
/// shells, `Rc` in single-threaded tests) is a session too.
macro_rules! shared_session {
    ($($ptr:ty),*) => {$(
        impl<T: TargetSession + ?Sized> TargetSession for $ptr {
            fn admit(&self, cmd_sn: CmdSn, immediate: bool) -> Admit {
                (**self).admit(cmd_sn, immediate)
            }
            fn window(&self) -> (CmdSn, CmdSn) {
                (**self).window()
            }
            fn release_slot(&self) {
                (**self).release_slot()
            }
            fn register_task(&self, task: &NewTask) -> Result<TaskId, Refusal> {
                (**self).register_task(task)
            }
            fn is_aborted(&self, itt: u32, id: TaskId) -> bool {
                (**self).is_aborted(itt, id)
            }
            fn retire_task(&self, itt: u32, id: TaskId) -> bool {
                (**self).retire_task(itt, id)
            }
            fn descriptor_sense(&self, lun: u64) -> bool {
                (**self).descriptor_sense(lun)
            }
        }
    )*};
}

shared_session!(std::sync::Arc<T>, std::rc::Rc<T>);

/// A session of one connection (or several in one thread): the CmdSN
/// window and a task table, without Task Management of its own beyond
/// [`LocalSession::abort`]. Single-threaded (a `RefCell`, no lock: the
/// sans-IO core holds no mutex).
#[derive(Debug)]
pub struct LocalSession {
    inner: RefCell<Local>,
}

#[derive(Debug)]
struct Local {
    window: CmdWindow,
    /// ITT -> (task id, counted, aborted).
    tasks: TagMap<(TaskId, bool, bool)>,
    next_id: TaskId,
    descriptor_sense: bool,
}

impl LocalSession {
    /// A session whose first CmdSN is `first_cmd_sn`, with `queue_depth`
    /// commands in flight.
    pub fn new(first_cmd_sn: CmdSn, queue_depth: u32) -> Self {
        LocalSession {
            inner: RefCell::new(Local {
                window: CmdWindow::new(first_cmd_sn, queue_depth),
                tasks: TagMap::default(),
                next_id: 1,
                descriptor_sense: false,
            }),
        }
    }

    /// Every borrow ends within the method that takes it (no call out
    /// while borrowed), so it never overlaps another.
    fn state(&self) -> RefMut<'_, Local> {
        self.inner.borrow_mut()
    }

    /// Mark a task aborted (as a TMF would): it gets no response. Returns
    /// whether the ITT named a task.
    pub fn abort(&self, itt: u32) -> bool {
        match self.state().tasks.get_mut(&itt) {
            Some(t) => {
                t.2 = true;
                true
            }
            None => false,
        }
    }

    /// ABORT TASK for a command never received (RFC 7143 §11.5.1 b,
    /// [`CmdWindow::consider_received`]): whether its CmdSN was taken as
    /// received.
    pub fn consider_received(&self, ref_cmd_sn: CmdSn, tmf_cmd_sn: CmdSn) -> bool {
        self.state()
            .window
            .consider_received(ref_cmd_sn, tmf_cmd_sn)
    }

    /// Number of registered tasks.
    pub fn task_count(&self) -> usize {
        self.state().tasks.len()
    }

    /// Window slots in use.
    pub fn in_flight(&self) -> u32 {
        self.state().window.in_flight()
    }

    /// Use descriptor-format sense for transport-built CHECK CONDITIONs.
    pub fn set_descriptor_sense(&self, on: bool) {
        self.state().descriptor_sense = on;
    }
}

impl TargetSession for LocalSession {
    fn admit(&self, cmd_sn: CmdSn, immediate: bool) -> Admit {
        self.state().window.admit(cmd_sn, immediate)
    }

    fn window(&self) -> (CmdSn, CmdSn) {
        self.state().window.snapshot()
    }

    fn release_slot(&self) {
        self.state().window.complete();
    }

    fn register_task(&self, task: &NewTask) -> Result<TaskId, Refusal> {
        let mut l = self.state();
        if l.tasks.contains_key(&task.itt) {
            return Err(Refusal::TaskInProgress);
        }
        if !task.counted {
            let immediate = l.tasks.values().filter(|t| !t.1).count();
            if immediate >= l.window.queue_depth() as usize {
                return Err(Refusal::TooManyImmediate);
            }
        }
        let id = l.next_id;
        l.next_id += 1;
        l.tasks.insert(task.itt, (id, task.counted, false));
        Ok(id)
    }

    fn is_aborted(&self, itt: u32, id: TaskId) -> bool {
        match self.state().tasks.get(&itt) {
            Some(t) => t.0 != id || t.2,
            None => true,
        }
    }

    fn retire_task(&self, itt: u32, id: TaskId) -> bool {
        let mut l = self.state();
        let Some(&(tid, counted, aborted)) = l.tasks.get(&itt) else {
            return false;
        };
        if tid != id {
            return false;
        }
        l.tasks.remove(&itt);
        if counted {
            l.window.complete();
        }
        !aborted
    }

    fn descriptor_sense(&self, _lun: u64) -> bool {
        self.state().descriptor_sense
    }
}
