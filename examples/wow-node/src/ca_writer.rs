//! The CA node's writer thread: the CA's state changes reach its
//! directory (a [`FileStore`], fsynced) off the event loop, so an
//! enrolment never stalls the data plane.
//!
//! The core's CA writes to a [`QueueStore`]. After each turn of the event
//! loop the runtime hands the queued writes to a thread that owns the
//! `FileStore` ([`CaWriter::flush`]); the thread reports how far they are
//! durable, and [`CaWriter::durable`] marks them so, after which the runtime
//! calls [`wow_core::core::Core::handle_ca_durable`] to send the replies
//! the core held. Answers to the control socket's CA commands (a join
//! token, an approval) wait the same way ([`CaWriter::answer`]).
//!
//! A failed write is logged as an error; everything after it stays held
//! (the node fails closed), and the thread saves the whole state as a
//! snapshot with the next writes or after [`RETRY`].

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use ipsec_ca::store::{QueuedWrite, write_behind};
use ipsec_ca::{
    Barrier, Ca, CaError, FileStore, Gate, Policy, QueueStore, StoreError, StoreWriter, WriteQueue,
};
use tokio::sync::{oneshot, watch};

/// Time between attempts to save the state after a failed write, when no
/// new writes come.
pub const RETRY: Duration = Duration::from_secs(5);

/// Control-socket answers held at most while the CA's writes are not
/// durable; one past it is answered with an error at once.
pub const MAX_HELD_ANSWERS: usize = 256;

/// The runtime's side of the writer thread.
pub struct CaWriter {
    queue: WriteQueue,
    tx: Option<mpsc::Sender<Vec<QueuedWrite>>>,
    durable: watch::Receiver<u64>,
    thread: Option<JoinHandle<()>>,
    /// Control-socket answers, each waiting for the writes before it.
    answers: Barrier<(oneshot::Sender<String>, String)>,
}

/// Opens the CA in `dir` under `policy` over a write-behind store, and
/// starts the thread that writes to the directory.
pub fn open(dir: &Path, policy: Policy) -> Result<(Ca<QueueStore>, CaWriter), CaError> {
    let store = FileStore::new(dir)?;
    if !store.has_identity() {
        return Err(StoreError::NoCa(dir.to_path_buf()).into());
    }
    let identity = store.load_identity()?;
    let (store, writer) = write_behind(store)?;
    let queue = store.queue();
    let ca = Ca::open(identity, policy, store)?;
    let (tx, rx) = mpsc::channel();
    let (durable_tx, durable) = watch::channel(0);
    let dir = dir.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("ca-writer".into())
        .spawn(move || write_loop(writer, rx, durable_tx, dir))
        .map_err(|source| StoreError::Io {
            op: "spawn the writer thread for",
            path: PathBuf::from("the CA"),
            source,
        })?;
    let writer = CaWriter {
        answers: Barrier::new(queue.clone(), MAX_HELD_ANSWERS),
        queue,
        tx: Some(tx),
        durable,
        thread: Some(thread),
    };
    // `Ca::open` may have queued a first snapshot.
    writer.flush();
    Ok((ca, writer))
}

/// The writer thread: applies each batch to the directory and reports the
/// sequence number durable.
fn write_loop(
    mut writer: StoreWriter<FileStore>,
    rx: mpsc::Receiver<Vec<QueuedWrite>>,
    durable: watch::Sender<u64>,
    dir: PathBuf,
) {
    loop {
        let next = if writer.is_behind() {
            match rx.recv_timeout(RETRY) {
                Ok(writes) => Some(writes),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(writes) => Some(writes),
                Err(mpsc::RecvError) => break,
            }
        };
        let result = match next {
            Some(mut writes) => {
                // Whatever else is waiting goes in the same batch.
                while let Ok(more) = rx.try_recv() {
                    writes.extend(more);
                }
                writer.write(writes)
            }
            None => writer.retry(),
        };
        report(result, &durable, &dir);
    }
    if writer.is_behind() {
        report(writer.retry(), &durable, &dir);
    }
}

fn report(result: Result<u64, StoreError>, durable: &watch::Sender<u64>, dir: &Path) {
    match result {
        Ok(seq) => {
            durable.send_replace(seq);
        }
        Err(error) => tracing::error!(
            %error,
            dir = %dir.display(),
            "CA state NOT written: enrolment replies and CA answers are held until a write \
             succeeds (the whole state is saved again with the next change or within {}s)",
            RETRY.as_secs()
        ),
    }
}

impl CaWriter {
    /// The queue the core's CA writes to (for
    /// [`wow_core::core::Core::set_ca_queue`]).
    pub fn queue(&self) -> WriteQueue {
        self.queue.clone()
    }

    /// Hands the writes queued since the last call to the writer thread.
    pub fn flush(&self) {
        let writes = self.queue.take();
        if !writes.is_empty()
            && let Some(tx) = &self.tx
            && tx.send(writes).is_err()
        {
            tracing::error!("the CA writer thread is gone: CA changes are not written");
        }
    }

    /// Waits until the writer thread has made more writes durable and
    /// marks them so; sends the control-socket answers that waited for
    /// them. Never returns without a writer (or once its thread is gone).
    pub async fn durable(writer: Option<&mut CaWriter>) {
        let Some(w) = writer else {
            return std::future::pending().await;
        };
        if w.durable.changed().await.is_err() {
            return std::future::pending().await;
        }
        let seq = *w.durable.borrow_and_update();
        w.queue.mark_durable(seq);
        for (reply, text) in w.answers.release() {
            let _ = reply.send(text);
        }
    }

    /// Sends a control-socket CA command's `answer` once the writes the
    /// command made are durable.
    pub fn answer(&mut self, reply: oneshot::Sender<String>, answer: String) {
        match self.answers.hold((reply, answer)) {
            Gate::Pass((reply, answer)) => {
                let _ = reply.send(answer);
            }
            Gate::Held => {}
            Gate::Full((reply, _)) => {
                let _ = reply.send(format!(
                    "error: {MAX_HELD_ANSWERS} CA commands already wait for the CA's writes \
                     (see the log); try again"
                ));
            }
        }
    }
}

impl Drop for CaWriter {
    /// Hands over the last writes and waits for the thread to write them.
    fn drop(&mut self) {
        self.flush();
        self.tx = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the CA writer thread panicked");
        }
    }
}
