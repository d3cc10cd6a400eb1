//! The `storage` actor: the supervision tree's owner of the node's durable
//! store (DESIGN.md: a `storage` child that owns the RocksDB handle).
//!
//! The node opens the store before it builds the tree (an open failure must
//! fail the start, with the path and the cause), and the actors that write
//! to it hold clones of the handle (`BrokerCtx::storage`): a commit is a
//! call on the writer's own thread, never a message to this actor. What the
//! actor adds is a place in the tree: it starts first and stops last (the
//! root stops its children in reverse order), and it answers for the store
//! (its counters for `/metrics`; `/health/ready` asks it).
//!
//! A restart loses nothing and reopens nothing: the handle it holds is a
//! clone, and the data dir's lock stays held by the other clones (reopening
//! while they live would fail on that very lock).

use std::sync::Arc;

use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use roost_storage::{Storage, StorageStats};

/// The running `storage` actor, for readers outside the tree (the
/// management API); a restarted actor puts its new ref here.
pub type StorageSlot = Arc<RwLock<Option<ActorRef<StorageOwnerMsg>>>>;

pub struct StorageOwner;

pub struct StorageOwnerArgs {
    pub storage: Storage,
    pub slot: StorageSlot,
}

pub enum StorageOwnerMsg {
    /// The store's counters since it was opened.
    Stats(RpcReplyPort<StorageStats>),
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for StorageOwnerMsg {}

impl Actor for StorageOwner {
    type Msg = StorageOwnerMsg;
    type State = Storage;
    type Arguments = StorageOwnerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StorageOwnerMsg>,
        args: StorageOwnerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        *args.slot.write() = Some(myself);
        Ok(args.storage)
    }

    async fn handle(
        &self,
        _: ActorRef<StorageOwnerMsg>,
        msg: StorageOwnerMsg,
        storage: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StorageOwnerMsg::Stats(reply) => {
                let _ = reply.send(storage.stats());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_storage::{Batch, StorageOptions};

    #[tokio::test]
    async fn answers_the_stats_of_the_store_it_holds() {
        let storage = Storage::in_memory(StorageOptions::default());
        let slot = StorageSlot::default();
        let args = StorageOwnerArgs {
            storage: storage.clone(),
            slot: slot.clone(),
        };
        let (owner, join) = Actor::spawn(None, StorageOwner, args).await.unwrap();
        let registered = slot.read().clone().expect("registered in its slot");
        assert_eq!(registered.get_id(), owner.get_id());

        let mut batch = Batch::new();
        batch.delete_retained("t");
        storage.commit(batch).unwrap();
        let stats = ractor::call!(owner, StorageOwnerMsg::Stats).unwrap();
        assert_eq!((stats.commits, stats.corrupt_records), (1, 0));
        owner.stop(None);
        join.await.unwrap();
    }
}
