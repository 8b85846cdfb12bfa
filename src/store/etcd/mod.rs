//! Cluster mode: the lock store on etcd (`CLUSTER.md` in the shared notes
//! holds the design; `PROTOCOL.md` Part 3 the contract).

pub mod client;
