//! Sessions (RFC 7143 §4.4, §6.3): the session table keyed by
//! (initiator name, ISID, TSIH), multi-connection sessions, the task
//! registry that Task Management and Logout act on.
//!
//! A [`Session`] is shared (`Arc`) by the reader and writer tasks of each of
//! its connections and by the command tasks it spawns. Everything mutable is
//! behind short-held `std::sync::Mutex`es: nothing awaits while holding one.
//!
//! Reinstatement (RFC 7143 §6.3.5): a login with TSIH 0 and an (initiator
//! name, ISID) pair that already names a session of the same target closes
//! the old session; a login that joins a session with a CID that is still in
//! use closes the old connection (connection reinstatement).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use proto::serial::CmdSn;
use proto::session::tags::TagMap;
use proto::session::CmdWindow;

use crate::sync::lock;

/// Discovery or normal session (RFC 7143 §13.21 SessionType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Discovery,
    Normal,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPhase {
    /// Waiting for Data-Out (immediate, unsolicited or solicited by R2T).
    Collecting,
    /// Handed to the device server.
    Executing,
    /// Its response is being queued; it can no longer be aborted.
    Responding,
    /// Aborted by a TMF, a reset or the end of its connection/session:
    /// no response will be sent.
    Aborted,
}

/// Shared state of one task, seen by its connection and by TMFs.
#[derive(Debug)]
pub struct TaskShared {
    pub itt: u32,
    pub lun: u64,
    /// Unique id of the connection the task arrived on (allegiance).
    pub conn: u64,
    pub cmd_sn: CmdSn,
    /// Unique per session; guards against ITT reuse after an abort.
    pub id: u64,
    /// Whether it occupies a CmdSN window slot.
    pub counted: bool,
    phase: Mutex<TaskPhase>,
    /// Finished (response queued or abort acknowledged); `done_wake`
    /// wakes those waiting for it. No allocation per task, and nothing
    /// to do at the end when no one waits (the usual case).
    done: AtomicBool,
    done_wake: Notify,
}

impl TaskShared {
    pub fn phase(&self) -> TaskPhase {
        *lock(&self.phase)
    }

    /// Collecting -> Executing; false if it was aborted meanwhile.
    pub fn start_executing(&self) -> bool {
        let mut p = lock(&self.phase);
        if *p == TaskPhase::Collecting {
            *p = TaskPhase::Executing;
            true
        } else {
            false
        }
    }

    /// -> Responding; false if it was aborted (then send nothing).
    pub fn start_responding(&self) -> bool {
        let mut p = lock(&self.phase);
        match *p {
            TaskPhase::Collecting | TaskPhase::Executing => {
                *p = TaskPhase::Responding;
                true
            }
            TaskPhase::Responding | TaskPhase::Aborted => false,
        }
    }

    /// Mark aborted unless its response is already on its way. Returns the
    /// phase it was in.
    pub fn abort(&self) -> TaskPhase {
        let mut p = lock(&self.phase);
        let was = *p;
        if was != TaskPhase::Responding {
            *p = TaskPhase::Aborted;
        }
        was
    }

    pub fn is_aborted(&self) -> bool {
        self.phase() == TaskPhase::Aborted
    }

    /// Signal that the task is finished (its response is queued).
    pub fn set_done(&self) {
        self.done.store(true, Ordering::Release);
        self.done_wake.notify_waiters();
    }

    /// Wait until the task is finished (response queued or abort
    /// acknowledged by its executor).
    pub async fn wait_done(&self) {
        loop {
            // Registered before the check, so a `set_done` in between
            // is not missed.
            let woken = self.done_wake.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }
}

/// A connection's handle as the session sees it.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub cid: u16,
    /// Cancelled to make the connection close (logout of another CID,
    /// reinstatement, session close, shutdown).
    pub cancel: CancellationToken,
    /// Out-of-band messages to the connection's writer.
    pub notify: mpsc::UnboundedSender<ConnNotice>,
    /// Unique id, so a replaced connection does not remove its successor.
    pub id: u64,
}

/// Messages a session sends to one of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnNotice {
    /// Send an Async Message asking the initiator to log out within
    /// `seconds` (RFC 7143 §11.9.1, AsyncEvent 1).
    RequestLogout { seconds: u16 },
}

/// Identifies a session for reinstatement: initiator name (case-folded) and ISID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub initiator: String,
    pub isid: [u8; 6],
    pub target: String,
}

impl SessionKey {
    pub fn new(initiator: &str, isid: [u8; 6], target: &str) -> Self {
        SessionKey {
            initiator: initiator.to_ascii_lowercase(),
            isid,
            target: target.to_ascii_lowercase(),
        }
    }
}

/// Session-level state that is not specific to the SCSI layer.
#[derive(Debug)]
pub struct SessionCore {
    pub tsih: u16,
    pub key: SessionKey,
    pub kind: SessionKind,
    /// Initiator's name as sent (not case-folded).
    pub initiator_name: String,
    pub target_name: String,
    pub tpgt: u16,
    /// Negotiated MaxConnections.
    pub max_connections: u16,
    pub window: Mutex<CmdWindow>,
    conns: Mutex<Vec<ConnHandle>>,
    tasks: Mutex<TagMap<Arc<TaskShared>>>,
    next_task_id: AtomicU64,
    closed: AtomicBool,
    /// Cancelled when the session ends; its connections watch it.
    pub cancel: CancellationToken,
}

/// Why a task could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The ITT names a task that is still active (RFC 7143 §11.17.1,
    /// Reject reason "Task in progress").
    TaskInProgress,
    /// The session is closing.
    Closed,
}

impl SessionCore {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tsih: u16,
        key: SessionKey,
        kind: SessionKind,
        initiator_name: String,
        target_name: String,
        tpgt: u16,
        max_connections: u16,
        first_cmd_sn: CmdSn,
        queue_depth: u32,
    ) -> Self {
        SessionCore {
            tsih,
            key,
            kind,
            initiator_name,
            target_name,
            tpgt,
            max_connections: max_connections.max(1),
            window: Mutex::new(CmdWindow::new(first_cmd_sn, queue_depth)),
            conns: Mutex::new(Vec::new()),
            tasks: Mutex::new(TagMap::default()),
            next_task_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            cancel: CancellationToken::new(),
        }
    }

    /// (ExpCmdSN, MaxCmdSN) to put in an outgoing PDU.
    pub fn window_snapshot(&self) -> (CmdSn, CmdSn) {
        lock(&self.window).snapshot()
    }

    /// Number of connections currently logged in.
    pub fn connection_count(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Cids of the connections.
    pub fn cids(&self) -> Vec<u16> {
        lock(&self.conns).iter().map(|c| c.cid).collect()
    }

    /// Add a connection; a connection with the same CID is replaced and
    /// returned so the caller can close it (connection reinstatement).
    pub fn add_connection(&self, conn: ConnHandle) -> Option<ConnHandle> {
        let mut conns = lock(&self.conns);
        let old = conns
            .iter()
            .position(|c| c.cid == conn.cid)
            .map(|i| conns.remove(i));
        conns.push(conn);
        old
    }

    /// Remove a connection (by unique id); returns the number left.
    pub fn remove_connection(&self, id: u64) -> usize {
        let mut conns = lock(&self.conns);
        conns.retain(|c| c.id != id);
        conns.len()
    }

    /// The handle of connection `cid`.
    pub fn connection(&self, cid: u16) -> Option<ConnHandle> {
        lock(&self.conns).iter().find(|c| c.cid == cid).cloned()
    }

    /// All connection handles.
    pub fn connections(&self) -> Vec<ConnHandle> {
        lock(&self.conns).clone()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Mark closed and cancel every connection. Idempotent; returns whether
    /// this call closed it.
    pub fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.cancel.cancel();
        for c in lock(&self.conns).iter() {
            c.cancel.cancel();
        }
        true
    }

    /// Register a new task (ITT must be unused in the session).
    pub fn register_task(
        &self,
        itt: u32,
        lun: u64,
        conn: u64,
        cmd_sn: CmdSn,
        counted: bool,
    ) -> Result<Arc<TaskShared>, RegisterError> {
        if self.is_closed() {
            return Err(RegisterError::Closed);
        }
        let mut tasks = lock(&self.tasks);
        if tasks.contains_key(&itt) {
            return Err(RegisterError::TaskInProgress);
        }
        let t = Arc::new(TaskShared {
            itt,
            lun,
            conn,
            cmd_sn,
            id: self.next_task_id.fetch_add(1, Ordering::Relaxed),
            counted,
            phase: Mutex::new(TaskPhase::Collecting),
            done: AtomicBool::new(false),
            done_wake: Notify::new(),
        });
        tasks.insert(itt, t.clone());
        Ok(t)
    }

    /// Finish a task: [`SessionCore::retire_task`], then wake anyone waiting
    /// for it. Safe to call twice.
    pub fn finish_task(&self, task: &TaskShared) {
        self.retire_task(task);
        task.set_done();
    }

    /// Remove a task from the registry and release its window slot (before
    /// its response is queued, so the response already advertises the
    /// freed slot in MaxCmdSN). Safe to call twice.
    pub fn retire_task(&self, task: &TaskShared) {
        self.remove_task(task.itt, task.id);
    }

    /// Remove task `itt` from the registry if it is still task `id`, and
    /// release its window slot; returns it.
    pub fn remove_task(&self, itt: u32, id: u64) -> Option<Arc<TaskShared>> {
        let removed = {
            let mut tasks = lock(&self.tasks);
            match tasks.get(&itt) {
                Some(t) if t.id == id => tasks.remove(&itt),
                _ => None,
            }
        };
        if let Some(t) = &removed {
            if t.counted {
                lock(&self.window).complete();
            }
        }
        removed
    }

    /// Release a window slot for a non-SCSI command (NOP-Out, Text, Logout,
    /// TMF sent without the I bit) once it is answered.
    pub fn complete_command(&self) {
        lock(&self.window).complete();
    }

    /// Look a task up by ITT.
    pub fn task(&self, itt: u32) -> Option<Arc<TaskShared>> {
        lock(&self.tasks).get(&itt).cloned()
    }

    /// Tasks matching a predicate.
    pub fn tasks_where(&self, f: impl Fn(&TaskShared) -> bool) -> Vec<Arc<TaskShared>> {
        lock(&self.tasks)
            .values()
            .filter(|t| f(t))
            .cloned()
            .collect()
    }
}

/// All sessions of a server.
#[derive(Debug, Default)]
pub struct SessionTable<S> {
    inner: Mutex<TableInner<S>>,
}

#[derive(Debug)]
struct TableInner<S> {
    by_tsih: HashMap<u16, Arc<S>>,
    next_tsih: u16,
}

impl<S> Default for TableInner<S> {
    fn default() -> Self {
        TableInner {
            by_tsih: HashMap::new(),
            next_tsih: 1,
        }
    }
}

/// Access to the core of a session type stored in a [`SessionTable`].
pub trait HasCore {
    fn core(&self) -> &SessionCore;
}

impl<S: HasCore> SessionTable<S> {
    pub fn new() -> Self {
        SessionTable {
            inner: Mutex::new(TableInner::default()),
        }
    }

    /// A TSIH not in use (never 0, RFC 7143 §11.12.6).
    pub fn allocate_tsih(&self) -> u16 {
        let mut t = lock(&self.inner);
        loop {
            let cand = t.next_tsih;
            t.next_tsih = t.next_tsih.wrapping_add(1).max(1);
            if cand != 0 && !t.by_tsih.contains_key(&cand) {
                return cand;
            }
        }
    }

    /// Insert a new session. Returns the session it reinstates (same key),
    /// already removed from the table, for the caller to close.
    pub fn insert(&self, s: Arc<S>) -> Option<Arc<S>> {
        let mut t = lock(&self.inner);
        let key = s.core().key.clone();
        let old_tsih = t
            .by_tsih
            .iter()
            .find(|(_, v)| v.core().key == key && v.core().kind == s.core().kind)
            .map(|(k, _)| *k);
        let old = old_tsih.and_then(|k| t.by_tsih.remove(&k));
        t.by_tsih.insert(s.core().tsih, s);
        old
    }

    /// The session with `tsih`.
    pub fn get(&self, tsih: u16) -> Option<Arc<S>> {
        lock(&self.inner).by_tsih.get(&tsih).cloned()
    }

    /// The session with this key (for reinstatement checks).
    pub fn find(&self, key: &SessionKey) -> Option<Arc<S>> {
        lock(&self.inner)
            .by_tsih
            .values()
            .find(|s| &s.core().key == key)
            .cloned()
    }

    /// Remove a session if it is still the one registered under its TSIH.
    pub fn remove(&self, s: &Arc<S>) -> bool {
        let mut t = lock(&self.inner);
        let tsih = s.core().tsih;
        match t.by_tsih.get(&tsih) {
            Some(cur) if Arc::ptr_eq(cur, s) => t.by_tsih.remove(&tsih).is_some(),
            _ => false,
        }
    }

    /// Every session.
    pub fn all(&self) -> Vec<Arc<S>> {
        lock(&self.inner).by_tsih.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).by_tsih.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(SessionCore);
    impl HasCore for S {
        fn core(&self) -> &SessionCore {
            &self.0
        }
    }

    fn session(table: &SessionTable<S>, init: &str, isid: u8) -> Arc<S> {
        let tsih = table.allocate_tsih();
        Arc::new(S(SessionCore::new(
            tsih,
            SessionKey::new(init, [0x80, 0, 0, 0, 0, isid], "iqn.t"),
            SessionKind::Normal,
            init.into(),
            "iqn.t".into(),
            1,
            8,
            CmdSn::new(1),
            4,
        )))
    }

    #[test]
    fn reinstatement_replaces_same_initiator_and_isid() {
        let table = SessionTable::new();
        let a = session(&table, "iqn.i", 1);
        assert!(table.insert(a.clone()).is_none());
        let b = session(&table, "iqn.i", 2);
        assert!(table.insert(b.clone()).is_none());
        assert_ne!(a.0.tsih, b.0.tsih);
        let a2 = session(&table, "IQN.I", 1);
        let old = table.insert(a2.clone()).expect("reinstated");
        assert!(Arc::ptr_eq(&old, &a));
        assert_eq!(table.len(), 2);
        assert!(!table.remove(&a));
        assert!(table.remove(&a2));
        assert!(table.get(a2.0.tsih).is_none());
    }

    #[test]
    fn tasks_register_abort_finish() {
        let table = SessionTable::new();
        let s = session(&table, "iqn.i", 1);
        let core = &s.0;
        assert_eq!(
            lock(&core.window).admit(CmdSn::new(1), false),
            proto::session::Admit::Accept { counted: true }
        );
        let t = core.register_task(0x10, 0, 0, CmdSn::new(1), true).unwrap();
        assert_eq!(
            core.register_task(0x10, 0, 0, CmdSn::new(2), true)
                .unwrap_err(),
            RegisterError::TaskInProgress
        );
        assert_eq!(t.abort(), TaskPhase::Collecting);
        assert!(!t.start_executing());
        assert!(!t.start_responding());
        core.finish_task(&t);
        assert!(core.task(0x10).is_none());
        assert_eq!(core.window_snapshot(), (CmdSn::new(2), CmdSn::new(5)));
        // Finishing twice does not release a second slot.
        core.finish_task(&t);
        assert_eq!(core.window_snapshot(), (CmdSn::new(2), CmdSn::new(5)));
        // A task whose response is on its way cannot be aborted.
        let t2 = core
            .register_task(0x11, 0, 0, CmdSn::new(2), false)
            .unwrap();
        assert!(t2.start_executing());
        assert!(t2.start_responding());
        assert_eq!(t2.abort(), TaskPhase::Responding);
        assert!(!t2.is_aborted());
    }

    #[tokio::test]
    async fn wait_done_wakes() {
        let table = SessionTable::new();
        let s = session(&table, "iqn.i", 1);
        let t = s.0.register_task(1, 0, 0, CmdSn::new(1), false).unwrap();
        let t2 = t.clone();
        let s2 = s.clone();
        let h = tokio::spawn(async move { t2.wait_done().await });
        s2.0.finish_task(&t);
        tokio::time::timeout(std::time::Duration::from_secs(2), h)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn connections_replace_by_cid() {
        let table = SessionTable::new();
        let s = session(&table, "iqn.i", 1);
        let mk = |cid, id| {
            let (tx, _rx) = mpsc::unbounded_channel();
            ConnHandle {
                cid,
                cancel: CancellationToken::new(),
                notify: tx,
                id,
            }
        };
        assert!(s.0.add_connection(mk(0, 1)).is_none());
        assert!(s.0.add_connection(mk(1, 2)).is_none());
        let old = s.0.add_connection(mk(0, 3)).unwrap();
        assert_eq!(old.id, 1);
        assert_eq!(s.0.connection_count(), 2);
        assert_eq!(s.0.remove_connection(1), 2);
        assert_eq!(s.0.remove_connection(3), 1);
        assert!(s.0.close());
        assert!(!s.0.close());
        assert!(s.0.connections()[0].cancel.is_cancelled());
    }
}
