//! buildwit's own gRPC API (`proto/buildwit.proto`) over the engine: the service buildwitd
//! serves ([`server`]), the messages and their conversions that the CLI's client shares
//! ([`grpc`]), a remote client's files and caches mirrored under the root ([`session`]),
//! and its SSH agents relayed per connection ([`ssh`]).

pub mod grpc;
pub mod server;
pub mod session;
pub mod ssh;
