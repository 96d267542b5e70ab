//! A build in progress, as `Control/Solve` registers it: the gateway calls and the status
//! stream find it by the client's build id.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use buildwit_engine::ClientLink;
use buildwit_llb::pb;
use tokio::sync::{mpsc, oneshot};

use crate::proto::moby::buildkit::v1::StatusResponse;

/// What the client's build function returned.
pub type Returned = Result<buildwit_engine::FrontendOutput, tonic::Status>;

/// One build.
pub struct Job {
    /// The build's link to the engine: its file sync and cancellation.
    pub link: ClientLink,
    /// `SolveRequest.FrontendInputs`, for `LLBBridge/Inputs`.
    pub inputs: BTreeMap<String, pb::Definition>,
    /// Results handed to the client, by id.
    refs: Mutex<HashMap<String, Arc<pb::Definition>>>,
    /// The frontend the client last asked for (the history names it).
    pub frontend: Mutex<String>,
    /// Where `LLBBridge/Return` delivers; taken by the first return.
    returned: Mutex<Option<oneshot::Sender<Returned>>>,
    /// The progress of the build.
    pub status: StatusFeed,
}

impl Job {
    /// A job and the receiver of its returned result.
    pub fn new(
        link: ClientLink,
        inputs: BTreeMap<String, pb::Definition>,
    ) -> (Arc<Self>, oneshot::Receiver<Returned>) {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            link,
            inputs,
            refs: Mutex::default(),
            frontend: Mutex::default(),
            returned: Mutex::new(Some(tx)),
            status: StatusFeed::default(),
        };
        (Arc::new(job), rx)
    }

    /// Keep a result for the client under a new id.
    pub fn add_ref(&self, definition: Arc<pb::Definition>) -> String {
        let mut refs = self.refs.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("r{}", refs.len());
        refs.insert(id.clone(), definition);
        id
    }

    /// A result handed out earlier.
    pub fn get_ref(&self, id: &str) -> Option<Arc<pb::Definition>> {
        self.refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Deliver the final result; false if one was delivered already.
    pub fn deliver(&self, returned: Returned) -> bool {
        match self
            .returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(tx) => {
                let _ = tx.send(returned);
                true
            }
            None => false,
        }
    }
}

/// The status messages of a build: each subscriber gets every message from the start.
#[derive(Default)]
pub struct StatusFeed {
    inner: Mutex<Feed>,
}

#[derive(Default)]
struct Feed {
    sent: Vec<StatusResponse>,
    subscribers: Vec<mpsc::UnboundedSender<StatusResponse>>,
    done: bool,
}

impl StatusFeed {
    /// Send a message to every subscriber.
    pub fn publish(&self, message: StatusResponse) {
        let mut feed = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        feed.subscribers.retain(|s| s.send(message.clone()).is_ok());
        feed.sent.push(message);
    }

    /// The messages so far and those to come, until the build ends.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<StatusResponse> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut feed = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for m in &feed.sent {
            let _ = tx.send(m.clone());
        }
        if !feed.done {
            feed.subscribers.push(tx);
        }
        rx
    }

    /// The build ended: the streams end.
    pub fn finish(&self) {
        let mut feed = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        feed.done = true;
        feed.subscribers.clear();
    }
}
