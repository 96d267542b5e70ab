//! BuildKit's LLB messages (`solver/pb/ops.proto`), written by hand as prost types with the
//! same field numbers and wire types. Every map is a `BTreeMap`, so encoding is
//! deterministic (entries sorted by key), as Go's deterministic marshalling is.

use std::collections::BTreeMap;

/// The whole LLB graph: serialized ops, per-op metadata, source maps.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definition {
    /// One serialized `Op` per vertex; the terminal op is last.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub def: Vec<Vec<u8>>,
    /// Metadata by op digest.
    #[prost(btree_map = "string, message", tag = "2")]
    pub metadata: BTreeMap<String, OpMetadata>,
    /// Source maps.
    #[prost(message, optional, tag = "3")]
    pub source: Option<Source>,
}

/// One vertex of the graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Op {
    /// Edges to the ops this one reads.
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<Input>,
    /// The platform it runs for.
    #[prost(message, optional, tag = "10")]
    pub platform: Option<Platform>,
    /// Worker constraints.
    #[prost(message, optional, tag = "11")]
    pub constraints: Option<WorkerConstraints>,
    /// What the op does. Encode ops with [`crate::encode_op`]: Go writes this oneof after
    /// the other fields, prost in tag order.
    #[prost(oneof = "op::Op", tags = "2, 3, 4, 5, 6, 7, 8")]
    pub op: Option<op::Op>,
}

/// The oneof of [`Op`].
pub mod op {
    /// What an op does.
    #[derive(Clone, PartialEq, prost::Oneof)]
    #[allow(clippy::large_enum_variant)] // protobuf message shapes; ops are not hot values
    pub enum Op {
        /// Run a process.
        #[prost(message, tag = "2")]
        Exec(super::ExecOp),
        /// A source.
        #[prost(message, tag = "3")]
        Source(super::SourceOp),
        /// File actions.
        #[prost(message, tag = "4")]
        File(super::FileOp),
        /// A nested build.
        #[prost(message, tag = "5")]
        Build(super::BuildOp),
        /// Layer inputs.
        #[prost(message, tag = "6")]
        Merge(super::MergeOp),
        /// Difference of two inputs.
        #[prost(message, tag = "7")]
        Diff(super::DiffOp),
        /// Outputs that are inputs.
        #[prost(message, tag = "8")]
        Passthrough(super::PassthroughOp),
    }
}

/// An edge: output `index` of the op with digest `digest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Input {
    /// Digest of the producing op.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Output index on it.
    #[prost(int64, tag = "2")]
    pub index: i64,
}

/// An OCI platform.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    #[prost(string, tag = "1")]
    pub architecture: String,
    /// `linux`, ...
    #[prost(string, tag = "2")]
    pub os: String,
    /// `v7`, ...
    #[prost(string, tag = "3")]
    pub variant: String,
    /// Windows version.
    #[prost(string, tag = "4")]
    pub os_version: String,
    /// Unused by BuildKit.
    #[prost(string, repeated, tag = "5")]
    pub os_features: Vec<String>,
}

/// Worker constraints (containerd filters).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkerConstraints {
    /// Filters.
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
}

/// Run a process with mounts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecOp {
    /// The process.
    #[prost(message, optional, tag = "1")]
    pub meta: Option<Meta>,
    /// Its mounts.
    #[prost(message, repeated, tag = "2")]
    pub mounts: Vec<Mount>,
    /// [`NetMode`].
    #[prost(enumeration = "NetMode", tag = "3")]
    pub network: i32,
    /// [`SecurityMode`].
    #[prost(enumeration = "SecurityMode", tag = "4")]
    pub security: i32,
    /// Environment variables from secrets.
    #[prost(message, repeated, tag = "5")]
    pub secretenv: Vec<SecretEnv>,
    /// CDI devices.
    #[prost(message, repeated, tag = "6")]
    pub cdi_devices: Vec<CdiDevice>,
}

/// The process of an exec.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Meta {
    /// Arguments.
    #[prost(string, repeated, tag = "1")]
    pub args: Vec<String>,
    /// `K=V` entries.
    #[prost(string, repeated, tag = "2")]
    pub env: Vec<String>,
    /// Working directory.
    #[prost(string, tag = "3")]
    pub cwd: String,
    /// User.
    #[prost(string, tag = "4")]
    pub user: String,
    /// Proxy variables.
    #[prost(message, optional, tag = "5")]
    pub proxy_env: Option<ProxyEnv>,
    /// `/etc/hosts` entries.
    #[prost(message, repeated, tag = "6")]
    pub extra_hosts: Vec<HostIp>,
    /// Hostname.
    #[prost(string, tag = "7")]
    pub hostname: String,
    /// Rlimits.
    #[prost(message, repeated, tag = "9")]
    pub ulimit: Vec<Ulimit>,
    /// Cgroup parent.
    #[prost(string, tag = "10")]
    pub cgroup_parent: String,
    /// Remove mount stubs recursively.
    #[prost(bool, tag = "11")]
    pub remove_mount_stubs_recursive: bool,
    /// Exit codes that count as success.
    #[prost(int32, repeated, tag = "12")]
    pub valid_exit_codes: Vec<i32>,
}

/// An `/etc/hosts` entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HostIp {
    /// Host name.
    #[prost(string, tag = "1")]
    pub host: String,
    /// Address.
    #[prost(string, tag = "2")]
    pub ip: String,
}

/// An rlimit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ulimit {
    /// Name, such as `nofile`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Soft limit.
    #[prost(int64, tag = "2")]
    pub soft: i64,
    /// Hard limit.
    #[prost(int64, tag = "3")]
    pub hard: i64,
}

/// Proxy variables.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProxyEnv {
    /// HTTP_PROXY.
    #[prost(string, tag = "1")]
    pub http_proxy: String,
    /// HTTPS_PROXY.
    #[prost(string, tag = "2")]
    pub https_proxy: String,
    /// FTP_PROXY.
    #[prost(string, tag = "3")]
    pub ftp_proxy: String,
    /// NO_PROXY.
    #[prost(string, tag = "4")]
    pub no_proxy: String,
    /// ALL_PROXY.
    #[prost(string, tag = "5")]
    pub all_proxy: String,
}

/// Network of an exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum NetMode {
    /// The default sandbox.
    Unset = 0,
    /// The host's network.
    Host = 1,
    /// No network.
    None = 2,
}

/// Security mode of an exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum SecurityMode {
    /// Sandboxed.
    Sandbox = 0,
    /// Privileged.
    Insecure = 1,
}

/// A secret as an environment variable.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretEnv {
    /// Secret id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Variable name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Missing secret is not an error.
    #[prost(bool, tag = "3")]
    pub optional: bool,
}

/// A CDI device.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CdiDevice {
    /// Fully qualified name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Missing device is not an error.
    #[prost(bool, tag = "2")]
    pub optional: bool,
}

/// A mount of an exec.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    /// Input index, or -1 for scratch.
    #[prost(int64, tag = "1")]
    pub input: i64,
    /// Sub-path of the input.
    #[prost(string, tag = "2")]
    pub selector: String,
    /// Mount point.
    #[prost(string, tag = "3")]
    pub dest: String,
    /// Output index, or -1 for none.
    #[prost(int64, tag = "4")]
    pub output: i64,
    /// Read-only.
    #[prost(bool, tag = "5")]
    pub readonly: bool,
    /// [`MountType`].
    #[prost(enumeration = "MountType", tag = "6")]
    pub mount_type: i32,
    /// tmpfs options.
    #[prost(message, optional, tag = "19")]
    pub tmpfs_opt: Option<TmpfsOpt>,
    /// Cache options.
    #[prost(message, optional, tag = "20")]
    pub cache_opt: Option<CacheOpt>,
    /// Secret options.
    #[prost(message, optional, tag = "21")]
    pub secret_opt: Option<SecretOpt>,
    /// SSH options.
    #[prost(message, optional, tag = "22")]
    pub ssh_opt: Option<SshOpt>,
    /// Gateway container result id.
    #[prost(string, tag = "23")]
    pub result_id: String,
    /// [`MountContentCache`].
    #[prost(enumeration = "MountContentCache", tag = "24")]
    pub content_cache: i32,
}

/// How a mount is provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum MountType {
    /// A filesystem.
    Bind = 0,
    /// A secret file.
    Secret = 1,
    /// An ssh agent socket.
    Ssh = 2,
    /// A persistent cache.
    Cache = 3,
    /// A tmpfs.
    Tmpfs = 4,
}

/// Content-based caching of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum MountContentCache {
    /// Decided by the solver.
    Default = 0,
    /// On.
    On = 1,
    /// Off.
    Off = 2,
}

/// tmpfs options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TmpfsOpt {
    /// Size in bytes.
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// Cache mount options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheOpt {
    /// Cache id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// [`CacheSharingOpt`].
    #[prost(enumeration = "CacheSharingOpt", tag = "2")]
    pub sharing: i32,
}

/// Sharing of a cache mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum CacheSharingOpt {
    /// Shared by concurrent execs.
    Shared = 0,
    /// Private copy per exec.
    Private = 1,
    /// One exec at a time.
    Locked = 2,
}

/// Secret mount options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretOpt {
    /// Secret id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Owner.
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    /// Group.
    #[prost(uint32, tag = "3")]
    pub gid: u32,
    /// Mode.
    #[prost(uint32, tag = "4")]
    pub mode: u32,
    /// Missing secret is not an error.
    #[prost(bool, tag = "5")]
    pub optional: bool,
}

/// SSH mount options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SshOpt {
    /// Agent id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Owner.
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    /// Group.
    #[prost(uint32, tag = "3")]
    pub gid: u32,
    /// Mode.
    #[prost(uint32, tag = "4")]
    pub mode: u32,
    /// Missing agent is not an error.
    #[prost(bool, tag = "5")]
    pub optional: bool,
}

/// A source.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceOp {
    /// `docker-image://…`, `local://…`, ...
    #[prost(string, tag = "1")]
    pub identifier: String,
    /// Attributes.
    #[prost(btree_map = "string, string", tag = "2")]
    pub attrs: BTreeMap<String, String>,
}

/// A nested build.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BuildOp {
    /// Input holding the definition, or -1.
    #[prost(int64, tag = "1")]
    pub builder: i64,
    /// Named inputs.
    #[prost(btree_map = "string, message", tag = "2")]
    pub inputs: BTreeMap<String, BuildInput>,
    /// An inline definition.
    #[prost(message, optional, tag = "3")]
    pub def: Option<Definition>,
    /// Attributes.
    #[prost(btree_map = "string, string", tag = "4")]
    pub attrs: BTreeMap<String, String>,
}

/// An input of a nested build.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BuildInput {
    /// Input index.
    #[prost(int64, tag = "1")]
    pub input: i64,
}

/// Layer inputs on top of each other.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeOp {
    /// The inputs, bottom first.
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<MergeInput>,
}

/// An input of a merge.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeInput {
    /// Input index.
    #[prost(int64, tag = "1")]
    pub input: i64,
}

/// The changes from `lower` to `upper`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiffOp {
    /// Lower input.
    #[prost(message, optional, tag = "1")]
    pub lower: Option<LowerDiffInput>,
    /// Upper input.
    #[prost(message, optional, tag = "2")]
    pub upper: Option<UpperDiffInput>,
}

/// Lower side of a diff.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LowerDiffInput {
    /// Input index, -1 for scratch.
    #[prost(int64, tag = "1")]
    pub input: i64,
}

/// Upper side of a diff.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpperDiffInput {
    /// Input index, -1 for scratch.
    #[prost(int64, tag = "1")]
    pub input: i64,
}

/// Outputs that are clones of inputs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PassthroughOp {
    /// Identifier.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Output i is input `outputs[i]`.
    #[prost(int64, repeated, tag = "2")]
    pub outputs: Vec<i64>,
}

/// A sequence of file actions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileOp {
    /// The actions.
    #[prost(message, repeated, tag = "2")]
    pub actions: Vec<FileAction>,
}

/// One file action.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileAction {
    /// Input index, `len(inputs)+k` for action k's result, or -1.
    #[prost(int64, tag = "1")]
    pub input: i64,
    /// Secondary input (copy source), same encoding.
    #[prost(int64, tag = "2")]
    pub secondary_input: i64,
    /// Output index, or -1.
    #[prost(int64, tag = "3")]
    pub output: i64,
    /// The action.
    #[prost(oneof = "file_action::Action", tags = "4, 5, 6, 7, 8")]
    pub action: Option<file_action::Action>,
}

/// The oneof of [`FileAction`].
pub mod file_action {
    /// What a file action does.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Action {
        /// Copy.
        #[prost(message, tag = "4")]
        Copy(super::FileActionCopy),
        /// Create a file.
        #[prost(message, tag = "5")]
        Mkfile(super::FileActionMkFile),
        /// Create a directory.
        #[prost(message, tag = "6")]
        Mkdir(super::FileActionMkDir),
        /// Remove.
        #[prost(message, tag = "7")]
        Rm(super::FileActionRm),
        /// Create a symlink.
        #[prost(message, tag = "8")]
        Symlink(super::FileActionSymlink),
    }
}

/// Copy `secondaryInput:src` onto `input:dest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionCopy {
    /// Source path.
    #[prost(string, tag = "1")]
    pub src: String,
    /// Destination path.
    #[prost(string, tag = "2")]
    pub dest: String,
    /// Owner.
    #[prost(message, optional, tag = "3")]
    pub owner: Option<ChownOpt>,
    /// Mode, -1 when unset.
    #[prost(int32, tag = "4")]
    pub mode: i32,
    /// Follow a symlink source.
    #[prost(bool, tag = "5")]
    pub follow_symlink: bool,
    /// Copy a directory's contents.
    #[prost(bool, tag = "6")]
    pub dir_copy_contents: bool,
    /// Unpack archives like Docker's ADD.
    #[prost(bool, tag = "7")]
    pub attempt_unpack_docker_compatibility: bool,
    /// Create missing parents.
    #[prost(bool, tag = "8")]
    pub create_dest_path: bool,
    /// Expand wildcards.
    #[prost(bool, tag = "9")]
    pub allow_wildcard: bool,
    /// An empty wildcard match is fine.
    #[prost(bool, tag = "10")]
    pub allow_empty_wildcard: bool,
    /// Unix ns, -1 when unset.
    #[prost(int64, tag = "11")]
    pub timestamp: i64,
    /// Include patterns.
    #[prost(string, repeated, tag = "12")]
    pub include_patterns: Vec<String>,
    /// Exclude patterns.
    #[prost(string, repeated, tag = "13")]
    pub exclude_patterns: Vec<String>,
    /// Replace paths of another type.
    #[prost(bool, tag = "14")]
    pub always_replace_existing_dest_paths: bool,
    /// Symbolic mode.
    #[prost(string, tag = "15")]
    pub mode_str: String,
    /// Paths that must exist.
    #[prost(string, repeated, tag = "16")]
    pub required_paths: Vec<String>,
}

/// Create a file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkFile {
    /// Path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Mode.
    #[prost(int32, tag = "2")]
    pub mode: i32,
    /// Content.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    /// Owner.
    #[prost(message, optional, tag = "4")]
    pub owner: Option<ChownOpt>,
    /// Unix ns.
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

/// Create a directory.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkDir {
    /// Path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Mode.
    #[prost(int32, tag = "2")]
    pub mode: i32,
    /// Create parents.
    #[prost(bool, tag = "3")]
    pub make_parents: bool,
    /// Owner.
    #[prost(message, optional, tag = "4")]
    pub owner: Option<ChownOpt>,
    /// Unix ns.
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

/// Remove a path.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionRm {
    /// Path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Missing path is fine.
    #[prost(bool, tag = "2")]
    pub allow_not_found: bool,
    /// Expand wildcards.
    #[prost(bool, tag = "3")]
    pub allow_wildcard: bool,
}

/// Create a symlink.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionSymlink {
    /// Link target.
    #[prost(string, tag = "1")]
    pub oldpath: String,
    /// Link path.
    #[prost(string, tag = "2")]
    pub newpath: String,
    /// Owner.
    #[prost(message, optional, tag = "3")]
    pub owner: Option<ChownOpt>,
    /// Unix ns.
    #[prost(int64, tag = "4")]
    pub timestamp: i64,
}

/// Owner of created files.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChownOpt {
    /// User.
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserOpt>,
    /// Group.
    #[prost(message, optional, tag = "2")]
    pub group: Option<UserOpt>,
}

/// A user or group by name or id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserOpt {
    /// Name or id.
    #[prost(oneof = "user_opt::User", tags = "1, 2")]
    pub user: Option<user_opt::User>,
}

/// The oneof of [`UserOpt`].
pub mod user_opt {
    /// By name or id.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum User {
        /// By name.
        #[prost(message, tag = "1")]
        ByName(super::NamedUserOpt),
        /// By id.
        #[prost(uint32, tag = "2")]
        ById(u32),
    }
}

/// A user name and the input that resolves it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedUserOpt {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Input index, -1 for none.
    #[prost(int64, tag = "2")]
    pub input: i64,
}

/// Metadata of one op; not part of its digest.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OpMetadata {
    /// Never cache.
    #[prost(bool, tag = "1")]
    pub ignore_cache: bool,
    /// `llb.customname`, ...
    #[prost(btree_map = "string, string", tag = "2")]
    pub description: BTreeMap<String, String>,
    /// Export to remote cache.
    #[prost(message, optional, tag = "4")]
    pub export_cache: Option<ExportCache>,
    /// Capabilities needed.
    #[prost(btree_map = "string, bool", tag = "5")]
    pub caps: BTreeMap<String, bool>,
    /// Progress group.
    #[prost(message, optional, tag = "6")]
    pub progress_group: Option<ProgressGroup>,
    /// Cgroup limits.
    #[prost(message, optional, tag = "7")]
    pub linux_resources: Option<LinuxResources>,
}

/// Whether to export an op's result to a remote cache.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportCache {
    /// Export or not.
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// A group in progress output.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProgressGroup {
    /// Id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Weak grouping.
    #[prost(bool, tag = "3")]
    pub weak: bool,
}

/// Per-step cgroup limits.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxResources {
    /// Memory bytes.
    #[prost(int64, tag = "1")]
    pub memory: i64,
    /// Memory + swap bytes.
    #[prost(int64, tag = "2")]
    pub memory_swap: i64,
    /// CPU shares.
    #[prost(uint64, tag = "3")]
    pub cpu_shares: u64,
    /// CFS period.
    #[prost(uint64, tag = "4")]
    pub cpu_period: u64,
    /// CFS quota.
    #[prost(int64, tag = "5")]
    pub cpu_quota: i64,
    /// CPUs.
    #[prost(string, tag = "6")]
    pub cpuset_cpus: String,
    /// Memory nodes.
    #[prost(string, tag = "7")]
    pub cpuset_mems: String,
}

/// Source maps.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Source {
    /// Locations by op digest.
    #[prost(btree_map = "string, message", tag = "1")]
    pub locations: BTreeMap<String, Locations>,
    /// The source files.
    #[prost(message, repeated, tag = "2")]
    pub infos: Vec<SourceInfo>,
}

/// Locations of one op.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Locations {
    /// The locations.
    #[prost(message, repeated, tag = "1")]
    pub locations: Vec<Location>,
}

/// Ranges in one source file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Index into `Source.infos`.
    #[prost(int32, tag = "1")]
    pub source_index: i32,
    /// Ranges.
    #[prost(message, repeated, tag = "2")]
    pub ranges: Vec<Range>,
}

/// A source file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceInfo {
    /// File name.
    #[prost(string, tag = "1")]
    pub filename: String,
    /// Content.
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    /// The LLB that loaded it.
    #[prost(message, optional, tag = "3")]
    pub definition: Option<Definition>,
    /// Linguist language.
    #[prost(string, tag = "4")]
    pub language: String,
}

/// A range in a file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Range {
    /// Start.
    #[prost(message, optional, tag = "1")]
    pub start: Option<Position>,
    /// End.
    #[prost(message, optional, tag = "2")]
    pub end: Option<Position>,
}

/// A position; lines are 1-based.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Position {
    /// Line.
    #[prost(int32, tag = "1")]
    pub line: i32,
    /// Column.
    #[prost(int32, tag = "2")]
    pub character: i32,
}
